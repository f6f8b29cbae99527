//! Which of a repo's files an engine needs (pure): the config, tokenizer, generation config,
//! chat template, custom code and quantization configs at the top level, and the weights in
//! one format only: safetensors when the repo has them (the shards its index names, or every
//! top-level `.safetensors` without an index), else PyTorch `.bin`, else `.pt`/`.pth`.
//! Sub-folders (`original/`, `onnx/`, ...) and other formats are left out.

/// The index of sharded safetensors weights.
pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
/// The index of sharded PyTorch weights.
pub const BIN_INDEX: &str = "pytorch_model.bin.index.json";

/// Small files an engine reads, by extension (top level only).
const META_EXTS: &[&str] = &["json", "jinja", "txt", "model", "tiktoken", "py"];

/// Index files of weight formats that are not chosen are left out with their weights.
const OTHER_INDEXES: &[&str] = &[
    SAFETENSORS_INDEX,
    BIN_INDEX,
    "tf_model.h5.index.json",
    "flax_model.msgpack.index.json",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    Safetensors,
    Bin,
    Pt,
    None,
}

fn ext(name: &str) -> &str {
    name.rsplit_once('.').map(|(_, e)| e).unwrap_or("")
}

fn top_level(name: &str) -> bool {
    !name.contains('/')
}

/// The weight format the repo is fetched in.
pub fn weight_format(names: &[&str]) -> WeightFormat {
    let has = |e: &str| names.iter().any(|n| top_level(n) && ext(n) == e);
    if has("safetensors") {
        WeightFormat::Safetensors
    } else if has("bin") {
        WeightFormat::Bin
    } else if has("pt") || has("pth") {
        WeightFormat::Pt
    } else {
        WeightFormat::None
    }
}

/// The index file to read before choosing shards, if the chosen format has one in the repo.
pub fn index_to_read(names: &[&str]) -> Option<&'static str> {
    let idx = match weight_format(names) {
        WeightFormat::Safetensors => SAFETENSORS_INDEX,
        WeightFormat::Bin => BIN_INDEX,
        _ => return None,
    };
    names.contains(&idx).then_some(idx)
}

/// The shard names an index's `weight_map` refers to; None when it is not such an index.
pub fn shards_of_index(index_json: &str) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(index_json).ok()?;
    let map = v.get("weight_map")?.as_object()?;
    let mut shards: Vec<String> = map
        .values()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    shards.sort();
    shards.dedup();
    Some(shards)
}

impl WeightFormat {
    /// "safetensors", "bin", "pt"; "" for none.
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::Safetensors => "safetensors",
            WeightFormat::Bin => "bin",
            WeightFormat::Pt => "pt",
            WeightFormat::None => "",
        }
    }

    fn holds(self, name: &str) -> bool {
        match self {
            WeightFormat::Safetensors => ext(name) == "safetensors",
            WeightFormat::Bin => ext(name) == "bin",
            WeightFormat::Pt => matches!(ext(name), "pt" | "pth"),
            WeightFormat::None => false,
        }
    }
}

/// The weight files of [`select`]'s choice (one format, the shards the index names), with
/// the format: what sizes a model from the Hub's listing.
pub fn weight_files(names: &[&str], index: Option<&str>) -> (WeightFormat, Vec<String>) {
    let format = weight_format(names);
    let files = select(names, index)
        .into_iter()
        .filter(|n| format.holds(n))
        .collect();
    (format, files)
}

/// The files to fetch, in the repo's order. `index` is the chosen format's index text when
/// the repo has one (see [`index_to_read`]); an unreadable index means every top-level file of
/// the format.
pub fn select(names: &[&str], index: Option<&str>) -> Vec<String> {
    let format = weight_format(names);
    let shards = index.and_then(shards_of_index);
    let chosen_index = index_to_read(names);
    let is_weight = |n: &str| format.holds(n);
    names
        .iter()
        .filter(|n| top_level(n))
        .filter(|n| {
            if is_weight(n) {
                return match &shards {
                    Some(s) => s.iter().any(|s| s == *n),
                    None => true,
                };
            }
            if OTHER_INDEXES.contains(n) {
                return chosen_index == Some(**n);
            }
            META_EXTS.contains(&ext(n))
        })
        .map(|n| n.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN: &[&str] = &[
        ".gitattributes",
        "LICENSE",
        "README.md",
        "config.json",
        "generation_config.json",
        "merges.txt",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
    ];

    #[test]
    fn safetensors_repo_takes_meta_and_shards() {
        let got = select(QWEN, None);
        assert_eq!(
            got,
            [
                "config.json",
                "generation_config.json",
                "merges.txt",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "model.safetensors.index.json",
                "tokenizer.json",
                "tokenizer_config.json",
                "vocab.json",
            ]
        );
        assert_eq!(index_to_read(QWEN), Some(SAFETENSORS_INDEX));
    }

    #[test]
    fn one_format_only() {
        let names = [
            "config.json",
            "model.safetensors",
            "pytorch_model.bin",
            "pytorch_model.bin.index.json",
            "consolidated.pt",
            "flax_model.msgpack",
            "tf_model.h5",
            "original/consolidated.00.pth",
            "onnx/model.onnx",
            "chat_template.jinja",
            "tokenizer.model",
            "modeling_custom.py",
        ];
        assert_eq!(
            select(&names, None),
            [
                "config.json",
                "model.safetensors",
                "chat_template.jinja",
                "tokenizer.model",
                "modeling_custom.py"
            ]
        );
        let bin = [
            "config.json",
            "pytorch_model.bin",
            "pytorch_model.bin.index.json",
        ];
        assert_eq!(weight_format(&bin), WeightFormat::Bin);
        assert_eq!(index_to_read(&bin), Some(BIN_INDEX));
        assert_eq!(select(&bin, None), bin);
        assert_eq!(weight_format(&["consolidated.pth"]), WeightFormat::Pt);
        assert_eq!(weight_format(&["config.json"]), WeightFormat::None);
    }

    #[test]
    fn index_names_the_shards() {
        // Mistral-style repos ship consolidated.safetensors next to the HF shards.
        let names = [
            "config.json",
            "consolidated.safetensors",
            "model-00001-of-00001.safetensors",
            "model.safetensors.index.json",
        ];
        let index = r#"{"metadata":{"total_size":4},"weight_map":{"a":"model-00001-of-00001.safetensors","b":"model-00001-of-00001.safetensors"}}"#;
        assert_eq!(
            select(&names, Some(index)),
            [
                "config.json",
                "model-00001-of-00001.safetensors",
                "model.safetensors.index.json"
            ]
        );
        // What sizes the model: the chosen shards only, not consolidated.safetensors.
        assert_eq!(
            weight_files(&names, Some(index)),
            (
                WeightFormat::Safetensors,
                vec!["model-00001-of-00001.safetensors".to_string()]
            )
        );
        assert_eq!(weight_files(&["config.json"], None).1, Vec::<String>::new());
        // An index that is not one: every shard of the format.
        assert_eq!(select(&names, Some("not json")).len(), 4);
        assert_eq!(
            shards_of_index(index).unwrap(),
            ["model-00001-of-00001.safetensors"]
        );
    }
}
