//! Fuzzes `camcast::jpeg::inspect` and `repair` with arbitrary bytes: neither may panic, and
//! whatever `repair` returns must be a JPEG `inspect` accepts, with Huffman tables and without
//! trailing padding. A JPEG that already had tables must come back unchanged but for padding.
#![no_main]

use bytes::Bytes;
use camcast::jpeg::{inspect, repair_with_info, STANDARD_DHT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let inspected = inspect(data);
    let repaired = repair_with_info(Bytes::copy_from_slice(data));
    match (inspected, repaired) {
        (Err(_), Err(_)) => {}
        (Err(e), Ok(_)) => panic!("repair accepted input that inspect rejects: {e}"),
        (Ok(info), Err(e)) => {
            // Only a JPEG the standard tables cannot cover may be refused.
            assert!(!info.has_dht, "repair refused a JPEG with tables: {e}");
        }
        (Ok(before), Ok((out, claimed))) => {
            let after = inspect(&out).expect("repair output must pass inspect");
            assert_eq!(after, claimed, "repair_with_info describes its output");
            assert!(after.has_dht && after.trailing_padding == 0);
            assert_eq!((after.width, after.height), (before.width, before.height));
            if before.has_dht {
                assert_eq!(&out[..], &data[..before.len]);
            } else {
                assert_eq!(out.len(), before.len + STANDARD_DHT.len());
                let at = before.first_scan_at;
                assert_eq!(&out[..at], &data[..at]);
                assert_eq!(&out[at + STANDARD_DHT.len()..], &data[at..before.len]);
            }
        }
    }
});
