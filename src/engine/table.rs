//! The flag tables of the pinned engine versions, generated from the real engines' own parsers
//! (`tests/real-engine/gen-flags.sh` writes `tables/<engine>-<version>.json`), embedded in the
//! binary and parsed once.
//!
//! A table lists every option of one engine version: its kind (a switch, a boolean with a
//! `--no-` form, one value, a list, a JSON object), the type its value must have, its choices,
//! the other spellings the engine accepts (`-tp`, `--model`), and whether the engine calls it
//! deprecated; and the names of the engine's environment variables. [`for_version`] picks the
//! table for the version that will run: the same (major, minor, patch), else the newest
//! older one, else the oldest; no version means the newest.

use super::version::{Version, parse_version};
use crate::types::Engine;
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

/// The embedded tables, oldest first per engine. Pinning a new version: run the generator,
/// then add its file here.
const TABLES: &[&str] = &[
    include_str!("tables/vllm-0.32.0.json"),
    include_str!("tables/sglang-0.5.23.json"),
];

/// How an option takes its value (what argparse's action and nargs say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `store_true` and friends: the bare flag, no value.
    Flag,
    /// argparse `BooleanOptionalAction`: `--x` and `--no-x`.
    BoolOptional,
    /// One value.
    Value,
    /// One or more values (`nargs='+'`, `'*'`, append).
    List,
    /// One JSON object (vLLM config options; they also take dotted keys).
    Json,
}

/// What the option's type function accepts, as the generator measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    None,
    Str,
    Int,
    /// An integer, or one with a k/m/g suffix (`32k`), as vLLM's human-readable ints.
    HumanInt,
    Float,
    Bool,
    /// Any JSON text (`json.loads`).
    Json,
    /// A JSON object only (a config type such as vLLM's `CompilationConfig`).
    JsonObject,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Opt {
    /// The long name without dashes.
    pub name: String,
    pub kind: Kind,
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// The negated spelling of a [`Kind::BoolOptional`] option, without dashes.
    #[serde(default)]
    pub no_form: Option<String>,
    #[serde(default)]
    pub choices: Option<Vec<String>>,
    /// Other spellings, with their dashes (`-tp`, `--model`).
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub deprecated: bool,
}

#[derive(Debug, Deserialize)]
struct RawTable {
    engine: Engine,
    version: String,
    allow_abbrev: bool,
    dotted_json_keys: bool,
    options: Vec<Opt>,
    env: Vec<String>,
}

/// One engine version's table, indexed.
#[derive(Debug)]
pub struct Table {
    pub engine: Engine,
    /// The version the table was generated from (`0.32.0`).
    pub version: String,
    parsed: Version,
    /// The parser takes unique prefixes of long options (argparse `allow_abbrev`).
    pub allow_abbrev: bool,
    /// The parser takes dotted keys into JSON options (`--compilation-config.mode 3`).
    pub dotted_json_keys: bool,
    pub options: Vec<Opt>,
    env: BTreeSet<String>,
    /// Every long spelling (normalised, no dashes) and every short one (dashes stripped, case
    /// kept) -> (option index, negated).
    spellings: HashMap<String, (usize, bool)>,
    /// The long spellings only, for prefix matching (argparse abbreviates only `--` options).
    longs: Vec<String>,
}

/// Where a key (`tp`, `tensor_parallel_size`, `no-enable-x`) lands in a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The option at this index, in its `--no-` form when `negated`.
    Found {
        index: usize,
        negated: bool,
    },
    /// A prefix of several long options (argparse refuses it as ambiguous).
    Ambiguous(Vec<String>),
    Unknown,
}

/// Why an embedded table cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum TableError {
    #[error("table version `{0}` does not parse")]
    Version(String),
}

impl Table {
    fn from_raw(raw: RawTable) -> Result<Table, TableError> {
        let parsed =
            parse_version(&raw.version).ok_or_else(|| TableError::Version(raw.version.clone()))?;
        let mut spellings = HashMap::new();
        let mut longs = Vec::new();
        for (i, o) in raw.options.iter().enumerate() {
            let mut add = |spelling: &str, negated: bool| {
                let long = spelling.starts_with("--") || !spelling.starts_with('-');
                let key = if long {
                    super::flags::normalize(spelling)
                } else {
                    spelling.trim_start_matches('-').to_string()
                };
                if long {
                    longs.push(key.clone());
                }
                spellings.insert(key, (i, negated));
            };
            add(&o.name, false);
            if let Some(no) = &o.no_form {
                add(no, true);
            }
            for a in &o.aliases {
                add(a, false);
            }
        }
        longs.sort();
        longs.dedup();
        Ok(Table {
            engine: raw.engine,
            version: raw.version,
            parsed,
            allow_abbrev: raw.allow_abbrev,
            dotted_json_keys: raw.dotted_json_keys,
            options: raw.options,
            env: raw.env.into_iter().collect(),
            spellings,
            longs,
        })
    }

    /// The option a key spells exactly: short spellings are case-sensitive (`-O`, `-tp`), long
    /// ones take `_` for `-`.
    pub fn exact(&self, key: &str) -> Option<(usize, bool)> {
        let raw = key.trim();
        if !raw.starts_with("--")
            && let Some(&found) = self.spellings.get(raw.trim_start_matches('-'))
        {
            return Some(found);
        }
        self.spellings.get(&super::flags::normalize(raw)).copied()
    }

    /// Looks a key up as the engine's parser would: an exact spelling first, then, where the
    /// parser abbreviates, a prefix of exactly one long spelling.
    pub fn lookup(&self, key: &str) -> Lookup {
        if let Some((index, negated)) = self.exact(key) {
            return Lookup::Found { index, negated };
        }
        let norm = super::flags::normalize(key);
        if !self.allow_abbrev || norm.is_empty() {
            return Lookup::Unknown;
        }
        let matches: Vec<&String> = self.longs.iter().filter(|l| l.starts_with(&norm)).collect();
        match matches.as_slice() {
            [] => Lookup::Unknown,
            [one] => {
                let (index, negated) = self.spellings[*one];
                Lookup::Found { index, negated }
            }
            many => Lookup::Ambiguous(many.iter().map(|s| (*s).clone()).collect()),
        }
    }

    pub fn option(&self, index: usize) -> &Opt {
        &self.options[index]
    }

    /// The option named `name` exactly (its long name), if any.
    #[cfg(test)]
    pub fn by_name(&self, name: &str) -> Option<&Opt> {
        match self.spellings.get(name) {
            Some(&(i, false)) if self.options[i].name == name => Some(&self.options[i]),
            _ => None,
        }
    }

    /// Every long spelling a user could mean (names, long aliases, `--no-` forms).
    pub fn long_spellings(&self) -> impl Iterator<Item = &str> {
        self.longs.iter().map(String::as_str)
    }

    pub fn knows_env(&self, name: &str) -> bool {
        self.env.contains(name)
    }

    pub fn env_names(&self) -> impl Iterator<Item = &str> {
        self.env.iter().map(String::as_str)
    }
}

/// The tables of `engine`, oldest first, parsed on its first use: a supervisor of vLLM never
/// holds SGLang's (a table is some 100 KiB of heap).
fn parsed(engine: Engine) -> &'static [Table] {
    static VLLM: OnceLock<Vec<Table>> = OnceLock::new();
    static SGLANG: OnceLock<Vec<Table>> = OnceLock::new();
    let cell = match engine {
        Engine::Vllm => &VLLM,
        Engine::Sglang => &SGLANG,
    };
    cell.get_or_init(|| {
        let mut tables: Vec<Table> = TABLES
            .iter()
            .map(|text| {
                serde_json::from_str::<RawTable>(text)
                    .unwrap_or_else(|e| panic!("embedded engine flag table is invalid: {e}"))
            })
            .filter(|raw| raw.engine == engine)
            .map(|raw| {
                Table::from_raw(raw)
                    .unwrap_or_else(|e| panic!("embedded engine flag table is invalid: {e}"))
            })
            .collect();
        tables.sort_by_key(|t| t.parsed);
        tables
    })
}

/// The tables of one engine, oldest first. Never empty for a supported engine.
pub fn of(engine: Engine) -> impl Iterator<Item = &'static Table> {
    parsed(engine).iter()
}

/// The table of the newest pinned version.
pub fn newest(engine: Engine) -> &'static Table {
    of(engine)
        .last()
        .unwrap_or_else(|| panic!("no flag table for {engine}"))
}

/// The table for `version`: the same (major, minor, patch), else the newest older one, else
/// the oldest; an unparseable version gets the newest.
pub fn for_version(engine: Engine, version: &str) -> &'static Table {
    let Some(want) = parse_version(version) else {
        return newest(engine);
    };
    of(engine)
        .filter(|t| t.parsed <= want)
        .last()
        .or_else(|| of(engine).next())
        .unwrap_or_else(|| panic!("no flag table for {engine}"))
}

/// The pinned versions of one engine, oldest first (`["0.32.0"]`).
pub fn versions(engine: Engine) -> Vec<&'static str> {
    of(engine).map(|t| t.version.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_table_parses_and_is_consistent() {
        for engine in [Engine::Vllm, Engine::Sglang] {
            let t = newest(engine);
            assert!(
                t.options.len() > 100,
                "{engine}: {} options",
                t.options.len()
            );
            for o in &t.options {
                assert_eq!(super::super::flags::normalize(&o.name), o.name);
                assert_eq!(
                    o.no_form.is_some(),
                    o.kind == Kind::BoolOptional,
                    "{engine} {}",
                    o.name
                );
                assert_eq!(t.by_name(&o.name).map(|x| &x.name), Some(&o.name));
            }
        }
    }

    #[test]
    fn lookup_follows_the_parser() {
        let v = for_version(Engine::Vllm, "0.32.0");
        let name = |l: Lookup| match l {
            Lookup::Found { index, negated } => Some((v.option(index).name.clone(), negated)),
            _ => None,
        };
        assert_eq!(
            name(v.lookup("tp")),
            Some(("tensor-parallel-size".into(), false))
        );
        assert_eq!(
            name(v.lookup("-tp")),
            Some(("tensor-parallel-size".into(), false))
        );
        assert_eq!(
            name(v.lookup("O")),
            Some(("optimization-level".into(), false))
        );
        assert_eq!(
            name(v.lookup("no_enable_prefix_caching")),
            Some(("enable-prefix-caching".into(), true))
        );
        // `device` is a prefix of more than one long option in 0.32.0.
        assert!(matches!(v.lookup("device"), Lookup::Ambiguous(m) if m.len() > 1));
        assert_eq!(v.lookup("banana"), Lookup::Unknown);
        let s = for_version(Engine::Sglang, "0.5.23");
        assert!(matches!(
            s.lookup("cuda-graph-max-bs"),
            Lookup::Ambiguous(m) if m.contains(&"cuda-graph-max-bs-decode".to_string())
        ));
        assert!(matches!(s.lookup("tp"), Lookup::Found { .. }));
    }

    #[test]
    fn version_picks_a_table() {
        assert_eq!(for_version(Engine::Vllm, "0.32.0+cpu").version, "0.32.0");
        assert_eq!(for_version(Engine::Vllm, "0.40.1").version, "0.32.0");
        // Older than every table: the oldest (the version rules cover what changed).
        assert_eq!(for_version(Engine::Vllm, "0.10.2").version, "0.32.0");
        assert_eq!(
            for_version(Engine::Vllm, "junk").version,
            newest(Engine::Vllm).version
        );
        assert_eq!(versions(Engine::Sglang), vec!["0.5.23"]);
    }

    #[test]
    fn env_names_come_with_the_table() {
        let v = newest(Engine::Vllm);
        assert!(v.knows_env("VLLM_ROCM_USE_AITER"));
        assert!(!v.knows_env("VLLM_USE_AITER_UNIFIED_ATTENTION"));
        let s = newest(Engine::Sglang);
        assert!(s.knows_env("SGLANG_USE_AITER"));
        assert!(s.env_names().count() > 100);
    }
}
