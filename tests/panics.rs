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
