//! Which of timm's registered Vision Transformers ijepa-rs builds, and why
//! the others are refused: `cargo run -p ijepa-encoder --example registry_support`.

use std::collections::BTreeMap;

use ijepa_encoder::registry::{self, TimmArgs};

fn main() {
    let table = registry::registry();
    let mut refused: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut built = 0;
    for name in table.architectures.keys() {
        match registry::resolve(name, &TimmArgs::default()) {
            Ok(_) => built += 1,
            Err(e) => {
                let reason = e.to_string();
                let feature = reason
                    .split("uses ")
                    .nth(1)
                    .and_then(|r| r.split(", which").next())
                    .unwrap_or(&reason)
                    .to_string();
                refused.entry(feature).or_default().push(name);
            }
        }
    }
    println!(
        "timm {}: {built} of {} architectures build; refused:",
        table.timm_version,
        table.architectures.len()
    );
    for (feature, names) in refused {
        println!("- {feature} ({}): {}", names.len(), names.join(", "));
    }
}
