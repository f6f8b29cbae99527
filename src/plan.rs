//! Planning: topology x catalogue x request -> the ordered launches (chosen recipe first,
//! then the fallback chain), with the reasons.
//!
//! OWNER: recipe helper. CONTRACT: `Plan` and its fields are used by `supervise` and `host`;
//! extend, do not rename or remove.

use crate::launch::Launch;

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The model id as the user gave it.
    pub model: String,
    /// Chosen launch first, then the fallback chain in order. Never empty.
    pub launches: Vec<Launch>,
    /// Plain-words reasons why launches[0] won.
    pub reasons: Vec<String>,
    pub usable_gpus: u32,
    pub product: Option<String>,
    pub gfx: Option<String>,
}
