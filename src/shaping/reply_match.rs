//! What a rule of the shaping file matches in a receiver's reply (or a
//! local failure's text): the reply code or its class, the enhanced status
//! code (RFC 3463) or its start, a regular expression on the whole reply.
//! Shared by back-off rules and bounce classes; it decides nothing.

use super::rules::ShapingError;

/// The matchers as written in a rule (every one given must match).
#[derive(Debug, Clone, Default)]
pub struct ReplyMatchEntry<'a> {
    pub reply: Option<&'a str>,
    pub code: Option<u16>,
    pub enhanced: Option<&'a str>,
}

/// A compiled set of matchers.
#[derive(Debug, Clone)]
pub struct ReplyMatch {
    pattern: Option<regex::Regex>,
    code: Option<u16>,
    enhanced: Option<String>,
    /// The matchers as written (for logs).
    description: String,
}

impl ReplyMatch {
    /// Compiles the matchers of rule `what` (`[[backoff]]`, `[[class]]`).
    pub fn compile(entry: ReplyMatchEntry<'_>, what: &str) -> Result<ReplyMatch, ShapingError> {
        let invalid = |why: &str| ShapingError::Invalid(format!("{what} {entry:?}: {why}"));
        let pattern = match entry.reply {
            Some(text) => Some(
                regex::RegexBuilder::new(text)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| ShapingError::Invalid(format!("{what} reply: {e}")))?,
            ),
            None => None,
        };
        if pattern.is_none() && entry.code.is_none() && entry.enhanced.is_none() {
            return Err(invalid("needs reply, code or enhanced"));
        }
        if entry
            .code
            .is_some_and(|c| !(2..=5).contains(&c) && !(200..=599).contains(&c))
        {
            return Err(invalid("code must be a reply code (421) or class (4)"));
        }
        let description = [
            entry.code.map(|c| format!("code {c}")),
            entry.enhanced.map(|e| format!("enhanced {e}")),
            entry.reply.map(|r| format!("reply {r:?}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        Ok(ReplyMatch {
            pattern,
            code: entry.code,
            enhanced: entry.enhanced.map(str::to_owned),
            description,
        })
    }

    /// What the rule matches, as written (for logs).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether a reply (`421 4.7.0 text`, or a multi-line reply's lines
    /// joined) matches every matcher.
    pub fn matches(&self, reply: &str) -> bool {
        let code = reply.get(..3).and_then(|c| c.parse::<u16>().ok());
        let code_ok = match (self.code, code) {
            (None, _) => true,
            (Some(want), Some(got)) if want < 10 => got / 100 == want,
            (Some(want), Some(got)) => got == want,
            (Some(_), None) => false,
        };
        let enhanced_ok = self.enhanced.as_deref().is_none_or(|want| {
            crate::delivery::dsn::status_of(reply)
                .is_some_and(|got| got == want || (want.ends_with('.') && got.starts_with(want)))
        });
        code_ok && enhanced_ok && self.pattern.as_ref().is_none_or(|p| p.is_match(reply))
    }
}
