//! Engine flags written as the engine's own command line takes them, after `--`
//! (`aim-engine Qwen/Qwen3-32B -- --max-model-len 8192 --enforce-eager`, the way vLLM's image
//! takes `vllm serve MODEL --max-model-len 8192`), as the same flag -> value map as
//! `--engine-args` JSON, so the same flag tables check them (pure).
//!
//! Rules: `--flag` alone (next word a flag, or none) is a bare flag (null); `--flag value` one
//! value; `--flag v1 v2` a list; `--flag=value` one value, whatever follows; `-x` is a short
//! flag (`-tp 4`; `-O3` is `-O 3`); a word that starts with `-` and is a number is a value.
//! A value that is a number in its plainest spelling (`8192`, `0.9`) becomes a JSON number,
//! anything else stays text. A flag given twice: the later wins.

use indexmap::IndexMap;
use serde_json::Value;

/// Why the words after `--` are not engine flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrailingError {
    #[error("`{0}` is not a flag (each value follows its flag, e.g. `--max-model-len 8192`)")]
    NotAFlag(String),
}

/// The flag named by `word`, and the value written into it (`--x=1`, `-O3`), if `word` is a flag.
fn flag_of(word: &str) -> Option<(String, Option<String>)> {
    let is_number = word.parse::<f64>().is_ok();
    if let Some(long) = word.strip_prefix("--") {
        if long.is_empty() {
            return None;
        }
        return Some(match long.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (long.to_string(), None),
        });
    }
    let short = word.strip_prefix('-').filter(|_| !is_number)?;
    let first = short.chars().next().filter(char::is_ascii_alphabetic)?;
    if let Some((k, v)) = short.split_once('=') {
        return Some((k.to_string(), Some(v.to_string())));
    }
    if short.chars().all(|c| c.is_ascii_alphabetic()) {
        return Some((short.to_string(), None));
    }
    // `-O3`: one letter with its value attached.
    Some((
        first.to_string(),
        Some(short[first.len_utf8()..].to_string()),
    ))
}

/// A value word as JSON: a number when it is one in its plainest spelling, else text.
fn value_of(word: &str) -> Value {
    if let Ok(n) = word.parse::<i64>()
        && n.to_string() == word
    {
        return Value::from(n);
    }
    if let Ok(f) = word.parse::<f64>()
        && f.is_finite()
        && f.to_string() == word
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(word.to_string())
}

/// The words after `--` as flag -> value.
pub fn parse_trailing_flags(words: &[String]) -> Result<IndexMap<String, Value>, TrailingError> {
    let mut out: IndexMap<String, Value> = IndexMap::new();
    let mut i = 0;
    while i < words.len() {
        let Some((key, inline)) = flag_of(&words[i]) else {
            return Err(TrailingError::NotAFlag(words[i].clone()));
        };
        i += 1;
        let value = match inline {
            Some(v) => value_of(&v),
            None => {
                let mut values = Vec::new();
                while i < words.len() && flag_of(&words[i]).is_none() {
                    values.push(value_of(&words[i]));
                    i += 1;
                }
                match values.len() {
                    0 => Value::Null,
                    1 => values.remove(0),
                    _ => Value::Array(values),
                }
            }
        };
        out.shift_remove(&key);
        out.insert(key, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(words: &[&str]) -> Result<Value, TrailingError> {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        parse_trailing_flags(&words).map(|m| Value::Object(m.into_iter().collect()))
    }

    #[test]
    fn flags_as_the_engine_takes_them() {
        assert_eq!(
            parse(&["--max-model-len", "8192", "--enforce-eager"]).unwrap(),
            json!({"max-model-len": 8192, "enforce-eager": null})
        );
        assert_eq!(
            parse(&[
                "--gpu-memory-utilization=0.9",
                "--allowed-origins",
                "a",
                "b",
                "-tp",
                "2",
                "-O3",
                "--seed",
                "-1",
                "--revision",
                "007",
                "--compilation-config",
                r#"{"level": 3}"#,
            ])
            .unwrap(),
            json!({
                "gpu-memory-utilization": 0.9,
                "allowed-origins": ["a", "b"],
                "tp": 2,
                "O": 3,
                "seed": -1,
                "revision": "007",
                "compilation-config": r#"{"level": 3}"#,
            })
        );
        // The later of a flag given twice wins.
        assert_eq!(
            parse(&["--max-num-seqs", "8", "--max-num-seqs", "16"]).unwrap(),
            json!({"max-num-seqs": 16})
        );
        assert!(parse(&[]).unwrap().as_object().unwrap().is_empty());
        for bad in [&["8192"][..], &["--"], &["-", "x"]] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains("is not a flag"), "{e}");
        }
    }
}
