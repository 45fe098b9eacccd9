//! Ingress annotation parsing on arbitrary key/value maps: never panics; every error and warning
//! names a key that is in the map.
//!
//! Input format (so seeds are readable and libFuzzer's dictionary, `annotations.dict`, helps):
//! the first line is the namespace, every further line `key=value` (split at the first `=`).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use portcullis::model::annotations::{DurationSyntax, OptionDefaults, parse, parse_duration};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let namespace = lines.next().unwrap_or_default();
    let mut map = BTreeMap::new();
    for line in lines {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let manifest = parse_duration(value, DurationSyntax::Manifest);
        let flag = parse_duration(value, DurationSyntax::Flag);
        // The flag syntax accepts everything the manifest syntax does, with the same value.
        if let Ok(d) = manifest {
            assert_eq!(flag, Ok(d), "{value:?}");
        }
        map.insert(key.to_string(), value.to_string());
    }
    match parse(Some(&map), namespace, &OptionDefaults::default()) {
        Ok(parsed) => {
            for warning in &parsed.warnings {
                assert!(map.contains_key(warning.key()), "{warning}");
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for error in &errors {
                assert!(map.contains_key(error.key()), "{error}");
            }
        }
    }
});
