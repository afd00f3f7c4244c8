//! Fuzz target: bytes as a config file (YAML), parsed and validated as `fleetgate serve --config`
//! does. Must never panic; a config it accepts must print (`--print-config`) as YAML that loads
//! back to the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(printed) = fleetgate::fuzzing::config_yaml(text, &[]) {
        match fleetgate::fuzzing::config_yaml(&printed, &[]) {
            Ok(again) => assert_eq!(again, printed, "printed config does not load back the same"),
            Err(e) => panic!("printed config does not load back: {e}\n{printed}"),
        }
    }
});
