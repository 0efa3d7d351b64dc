//! "Did you mean …?" for misspelt names in study files: the known name closest to the one
//! written, when one is close enough to be a likely typo.

/// Jaro–Winkler similarity from which a known name counts as what was meant. Typos score
/// 0.9 and more (`max_lenght` / `max_length` 0.98, `learnig_rate` / `learning_rate` 0.99);
/// unrelated names of our study files stay below 0.8.
const MIN_SIMILARITY: f64 = 0.85;

/// The name in `known` closest to `word`, if it is close enough; of equally close names, the
/// first (lists put the common names first: `lo` is `low` before `log`).
pub fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(word, k), k))
        .filter(|(s, _)| *s >= MIN_SIMILARITY)
        .fold(None, |best: Option<(f64, &str)>, x| match best {
            Some(b) if b.0 >= x.0 => Some(b),
            _ => Some(x),
        })
        .map(|(_, k)| k)
}

/// `; did you mean `x`?` for the name in `known` closest to `word`, or nothing when none is
/// close: the tail of an "unknown name" message.
pub fn hint<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, known).map(|k| format!("; did you mean `{k}`?")).unwrap_or_default()
}

/// `message` with `; did you mean `x`?` added when it is serde's "unknown field `w`,
/// expected …" or "unknown variant `w`, expected …" and one of the expected names is close to
/// `w`.
pub fn with_suggestion(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("unknown variant `")) else {
        return message.to_string();
    };
    let Some((word, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    // Every backticked name after the word is one that was expected.
    format!("{message}{}", hint(word, expected.split('`').skip(1).step_by(2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_gets_the_name_it_meant_and_an_unrelated_word_nothing() {
        let m = "unknown field `max_lenght`, expected one of `learning_rate`, `max_length`, `seed`";
        assert_eq!(with_suggestion(m), format!("{m}; did you mean `max_length`?"));
        let v = "unknown variant `cosin`, expected `linear` or `cosine`";
        assert_eq!(with_suggestion(v), format!("{v}; did you mean `cosine`?"));
        let far = "unknown field `bogus`, expected one of `name`, `direction`, `metric`, `n_trials`, `seed`, `storage`";
        assert_eq!(with_suggestion(far), far);
        assert_eq!(with_suggestion("invalid type: string, expected a number"), "invalid type: string, expected a number");
        assert_eq!(closest("learnig_rate", ["batch_size", "learning_rate", "warmup_ratio"]), Some("learning_rate"));
        assert_eq!(closest("zzz", ["batch_size", "learning_rate"]), None);
        assert_eq!(closest("lo", ["type", "low", "high", "step", "log"]), Some("low"), "ties go to the first");
    }
}
