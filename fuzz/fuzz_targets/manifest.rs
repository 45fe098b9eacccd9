//! The standalone manifest loader on arbitrary text, then the model on whatever it accepted:
//! neither panics, and every file error is a diagnostic naming the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::model::{self, LastGood};
use portcullis::settings::BuildSettings;
use portcullis::source::Snapshot;
use portcullis::source::yaml::parse_manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_manifest("fuzz.yaml", text) {
        Ok(objects) => {
            let snapshot: Snapshot = objects.into_iter().collect();
            let built = model::build(&snapshot, &BuildSettings::default(), &LastGood::default());
            // A rebuild on its own output's last-good set is stable.
            let again = model::build(&snapshot, &BuildSettings::default(), &built.last_good);
            assert_eq!(again.table, built.table);
        }
        Err(diagnostic) => {
            assert!(diagnostic.field.starts_with("line "), "{diagnostic:?}");
        }
    }
});
