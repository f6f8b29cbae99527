//! PCI device id -> product family (the name recipes use in `gpu:`), from libdrm's
//! `amdgpu.ids` and the ROCm GPU-operator device rules. Virtual functions and
//! host-function variants map to their base product.

/// `(device id, product family)`. The family is what recipes match on, so a VF of an
/// MI300X is "MI300X".
const PRODUCTS: &[(u32, &str)] = &[
    (0x738c, "MI100"),
    (0x738e, "MI100"),
    (0x7408, "MI250X"),
    (0x740c, "MI250"),
    (0x740f, "MI210"),
    (0x7410, "MI210"),
    (0x74a0, "MI300A"),
    (0x74a1, "MI300X"),
    (0x74a9, "MI300X"),
    (0x74b5, "MI300X"),
    (0x74bd, "MI300X"),
    (0x74a2, "MI308X"),
    (0x74a8, "MI308X"),
    (0x74b6, "MI308X"),
    (0x74a5, "MI325X"),
    (0x74b9, "MI325X"),
    (0x75a0, "MI350X"),
    (0x75b0, "MI350X"),
    (0x75a3, "MI355X"),
    (0x75b3, "MI355X"),
    (0x7460, "V710"),
    (0x7461, "V710"),
    (0x7448, "W7900"),
    (0x744a, "W7900"),
    (0x7449, "W7800"),
    (0x745e, "W7800"),
    (0x73a2, "W6900X"),
    (0x73a3, "W6800"),
    (0x73ab, "W6800X"),
    (0x73a1, "V620"),
    (0x73ae, "V620"),
    (0x7550, "RX9070"),
    (0x744c, "RX7900"),
    (0x73af, "RX6900"),
    (0x73bf, "RX6800"),
    (0x164e, "Raphael iGPU"),
];

/// Product family for a PCI device id, None when the id is not in the table.
pub fn product(device_id: u32) -> Option<&'static str> {
    PRODUCTS
        .iter()
        .find(|(id, _)| *id == device_id)
        .map(|(_, name)| *name)
}

/// Product family, or `unknown (0x1234)` for ids not in the table.
pub fn product_or_unknown(device_id: u32) -> String {
    match product(device_id) {
        Some(p) => p.to_string(),
        None => format!("unknown (0x{device_id:04x})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids() {
        for (id, want) in [
            (29857, "MI300X"), // the KFD decimal of 0x74a1
            (0x74a0, "MI300A"),
            (0x74a2, "MI308X"),
            (0x74a5, "MI325X"),
            (0x75a0, "MI350X"),
            (0x75a3, "MI355X"),
            (0x7408, "MI250X"),
            (0x740f, "MI210"),
            (0x738c, "MI100"),
            (29772, "RX7900"),
            (0x7448, "W7900"),
        ] {
            assert_eq!(product(id), Some(want), "0x{id:04x}");
        }
    }

    #[test]
    fn ids_are_unique_and_unknown_is_explicit() {
        for (i, (id, _)) in PRODUCTS.iter().enumerate() {
            assert!(
                PRODUCTS[i + 1..].iter().all(|(other, _)| other != id),
                "0x{id:04x} twice"
            );
        }
        assert_eq!(product_or_unknown(0x1234), "unknown (0x1234)");
    }
}
