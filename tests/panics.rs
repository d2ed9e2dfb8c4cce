//! The panic hook counts and logs every panic (its own test binary: the hook is process-wide).

#[test]
fn a_panic_is_counted_and_the_process_goes_on() {
    camcast::panics::install_hook();
    assert_eq!(camcast::panics::count(), 0);
    let joined = std::thread::Builder::new()
        .name("viewer-task".into())
        .spawn(|| panic!("deliberate"))
        .unwrap()
        .join();
    assert!(joined.is_err());
    assert_eq!(camcast::panics::count(), 1);
    let _ = std::thread::spawn(|| panic!("{}", String::from("second"))).join();
    assert_eq!(camcast::panics::count(), 2);
}

/// The CI scripts search server logs for the mark (.ci/lib.sh, `no_panics_in`): it must be
/// the one the hook writes.
#[test]
fn ci_scripts_search_for_the_hooks_mark() {
    let lib = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/lib.sh")).unwrap();
    let line = format!("PANIC_MARK='{}'", camcast::panics::LOG_MARK);
    assert!(lib.contains(&line), ".ci/lib.sh lacks {line}");
}
