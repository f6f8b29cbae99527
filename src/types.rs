//! Small closed vocabularies shared by recipes, plans and engines.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

macro_rules! closed_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text $(, alias = $alias)*)] $variant),+
        }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let lower = s.trim().to_ascii_lowercase();
                $( if lower == $text $(|| lower == $alias)* { return Ok($name::$variant); } )+
                let all: Vec<&str> = vec![$($text),+];
                Err(format!("unknown {} `{}`; expected one of: {}", stringify!($name).to_ascii_lowercase(), s, all.join(", ")))
            }
        }
    };
}

closed_enum!(
    /// The inference engine a recipe runs.
    Engine { Vllm => "vllm", Sglang => "sglang" }
);
closed_enum!(
    /// Weight/compute precision of a recipe (AIM's names; `mxfp4` is read as fp4).
    Precision { Bf16 => "bf16", Fp16 => "fp16" | "float16", Fp32 => "fp32", Fp8 => "fp8", Fp4 => "fp4" | "mxfp4", Int8 => "int8", Int4 => "int4" }
);
closed_enum!(
    /// What a recipe was tuned for.
    Metric { Latency => "latency", Throughput => "throughput" }
);
closed_enum!(
    /// How much a recipe can be trusted; ranks optimized > preview > unoptimized > general.
    RecipeType { Optimized => "optimized", Preview => "preview", Unoptimized => "unoptimized", General => "general" }
);

/// A user choice that may be left to aim-engine (`auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Choice<T> {
    #[default]
    Auto,
    Is(T),
}

impl<T: FromStr<Err = String>> FromStr for Choice<T> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() || s.trim().eq_ignore_ascii_case("auto") {
            Ok(Choice::Auto)
        } else {
            s.parse().map(Choice::Is)
        }
    }
}

impl<T: Copy> Choice<T> {
    pub fn get(&self) -> Option<T> {
        match self {
            Choice::Auto => None,
            Choice::Is(t) => Some(*t),
        }
    }
}

/// Durations: `30`, `30s`, `500ms`, `2m`, `1h`, `0.5` (seconds when no unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; use e.g. 30s, 500ms, 2m"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("`{s}` is not a duration; use e.g. 30s, 500ms, 2m"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}
