//! The behaviour injected into `spate sink` to test senders: failure
//! replies for a fraction of the commands at a stage (a code, or a whole
//! reply text such as a receiver's "slow down"), delays before the
//! replies of a stage, a tarpit before every reply. Decisions are
//! deterministic (every k-th event, by error diffusion in integers), so a
//! test can predict and count them. It parses and decides; it never
//! sleeps or writes.

use std::time::Duration;

use thiserror::Error;

/// Where in the dialogue a fault or delay applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The greeting (a failure is 421 or 554 instead of 220, then close).
    Connect,
    /// EHLO and HELO.
    Helo,
    Mail,
    Rcpt,
    /// The DATA command (the 354), or the first BDAT chunk.
    Data,
    /// The end of the message: "." or BDAT LAST.
    Dot,
}

pub const STAGES: [Stage; 6] = [
    Stage::Connect,
    Stage::Helo,
    Stage::Mail,
    Stage::Rcpt,
    Stage::Data,
    Stage::Dot,
];

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Dot => "dot",
        }
    }

    /// A stage by name; `ehlo` and `end-of-data` are accepted for
    /// `helo` and `dot`.
    fn parse(text: &str) -> Result<Self, FaultError> {
        let text = text.trim();
        let alias = match text.to_ascii_lowercase().as_str() {
            "ehlo" => Some(Stage::Helo),
            "end-of-data" => Some(Stage::Dot),
            _ => None,
        };
        alias
            .or_else(|| {
                STAGES
                    .into_iter()
                    .find(|s| s.name().eq_ignore_ascii_case(text))
            })
            .ok_or_else(|| FaultError::Stage(text.to_owned()))
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The code used for "4xx" or "5xx" at this stage.
    fn default_code(self, class: u16) -> u16 {
        match (self, class) {
            (Stage::Connect | Stage::Helo, 4) => 421,
            (Stage::Connect | Stage::Helo, _) => 554,
            (Stage::Mail, 4) => 451,
            (Stage::Mail, _) => 553,
            (Stage::Rcpt, 4) => 450,
            (Stage::Rcpt, _) => 550,
            (Stage::Data | Stage::Dot, 4) => 451,
            (Stage::Data | Stage::Dot, _) => 554,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FaultError {
    #[error(
        "unknown stage {0:?}: want connect, helo (ehlo), mail, rcpt, data or dot (end-of-data)"
    )]
    Stage(String),
    #[error("bad fault {0:?}: want STAGE:CODE:FRACTION, like rcpt:4xx:0.1 or dot:554:5%")]
    Fault(String),
    #[error("bad delay {0:?}: want STAGE:DURATION, like rcpt:50ms")]
    Delay(String),
    #[error("bad reply {0:?}: want STAGE:FRACTION:TEXT, TEXT a 4xx or 5xx reply on one line, like 'rcpt:0.3:421 4.7.0 [TSS04] Messages temporarily deferred'")]
    Reply(String),
}

/// Fractions are kept in millionths so that sums are exact.
const ONE: u64 = 1_000_000;

/// One `--fail` or `--reply` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub stage: Stage,
    pub code: u16,
    /// Millionths of the stage's events that fail.
    pub millionths: u64,
    /// The whole reply line (without CRLF) of a `--reply` rule; `None`
    /// for `--fail`, which writes "CODE X.7.0 Injected failure at STAGE".
    pub text: Option<String>,
}

/// Reads a fraction: 0 to 1, or a percentage (`10%`), in millionths.
fn parse_fraction(text: &str) -> Option<u64> {
    let text = text.trim();
    let value = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().ok()? / 100.0,
        None => text.parse::<f64>().ok()?,
    };
    (0.0..=1.0)
        .contains(&value)
        .then(|| (value * ONE as f64).round() as u64)
}

/// The longest `--reply` text: one reply line (RFC 5321 4.5.3.1.5).
const MAX_REPLY_TEXT: usize = 510;

impl Fault {
    /// Parses `STAGE:CODE:FRACTION`: CODE is `4xx`, `5xx` or a code from
    /// 400 to 599; FRACTION is 0 to 1, or a percentage (`10%`).
    pub fn parse(text: &str) -> Result<Self, FaultError> {
        let bad = || FaultError::Fault(text.to_owned());
        let mut parts = text.split(':');
        let (Some(stage), Some(code), Some(fraction), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let stage = Stage::parse(stage)?;
        let code = code.trim().to_ascii_lowercase();
        let code = match code.as_str() {
            "4xx" => stage.default_code(4),
            "5xx" => stage.default_code(5),
            digits => digits
                .parse::<u16>()
                .ok()
                .filter(|c| (400..600).contains(c))
                .ok_or_else(bad)?,
        };
        Ok(Fault {
            stage,
            code,
            millionths: parse_fraction(fraction).ok_or_else(bad)?,
            text: None,
        })
    }

    /// Parses `STAGE:FRACTION:TEXT` (`--reply`): TEXT is the whole reply
    /// line, starting with a code from 400 to 599 (colons inside it are
    /// kept), e.g. `rcpt:0.3:421 4.7.0 [TSS04] Messages temporarily
    /// deferred`. A 421 closes the connection, as with `--fail`.
    pub fn parse_reply(text: &str) -> Result<Self, FaultError> {
        let bad = || FaultError::Reply(text.to_owned());
        let mut parts = text.splitn(3, ':');
        let (Some(stage), Some(fraction), Some(reply)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let stage = Stage::parse(stage)?;
        let reply = reply.trim();
        let code = reply
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (400..600).contains(c))
            .ok_or_else(bad)?;
        let well_formed = reply.len() <= MAX_REPLY_TEXT
            && matches!(reply.as_bytes().get(3), None | Some(b' '))
            && !reply.bytes().any(|b| b == b'\r' || b == b'\n');
        if !well_formed {
            return Err(bad());
        }
        Ok(Fault {
            stage,
            code,
            millionths: parse_fraction(fraction).ok_or_else(bad)?,
            text: Some(reply.to_owned()),
        })
    }

    /// The reply line to write, CRLF included.
    pub fn reply(&self) -> String {
        match &self.text {
            Some(text) => format!("{text}\r\n"),
            None => format!(
                "{} {}.7.0 Injected failure at {}\r\n",
                self.code,
                self.code / 100,
                self.stage.name()
            ),
        }
    }
}

/// Parses `STAGE:DURATION` for `--delay`.
pub fn parse_delay(text: &str) -> Result<(Stage, Duration), FaultError> {
    let (stage, duration) = text
        .split_once(':')
        .ok_or_else(|| FaultError::Delay(text.to_owned()))?;
    let duration = crate::blast::options::parse_duration(duration)
        .map_err(|_| FaultError::Delay(text.to_owned()))?;
    Ok((Stage::parse(stage)?, duration))
}

/// Everything injected, shared read-only by every core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    pub faults: Vec<Fault>,
    /// Extra wait before the reply of each stage.
    pub delays: [Duration; 6],
    /// Wait before every reply.
    pub tarpit: Duration,
}

impl FaultPlan {
    /// How long to wait before replying at `stage` (tarpit included).
    pub fn delay(&self, stage: Option<Stage>) -> Duration {
        self.tarpit + stage.map_or(Duration::ZERO, |s| self.delays[s.index()])
    }
}

/// One core's decisions: for each fault, the credit accumulated so far.
/// Each event of a stage adds every matching fault's fraction; a fault
/// whose credit reaches one fires (the first such, one per event) and
/// pays one back. So with fraction 1/k exactly every k-th event fails.
#[derive(Debug, Clone)]
pub struct Injector {
    faults: Vec<Fault>,
    credit: Vec<u64>,
}

impl Injector {
    pub fn new(plan: &FaultPlan) -> Self {
        Injector {
            faults: plan.faults.clone(),
            credit: vec![0; plan.faults.len()],
        }
    }

    /// One event at `stage`: the index (in the plan's `faults`) of the
    /// rule to fail it with, if any.
    pub fn decide(&mut self, stage: Stage) -> Option<usize> {
        let mut fired = None;
        for (i, (fault, credit)) in self.faults.iter().zip(self.credit.iter_mut()).enumerate() {
            if fault.stage != stage {
                continue;
            }
            *credit += fault.millionths;
            if fired.is_none() && *credit >= ONE {
                *credit -= ONE;
                fired = Some(i);
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_faults_and_delays() {
        assert_eq!(
            Fault::parse("rcpt:4xx:0.1"),
            Ok(Fault {
                stage: Stage::Rcpt,
                code: 450,
                millionths: 100_000,
                text: None,
            })
        );
        assert_eq!(Fault::parse("DOT:554:5%").unwrap().millionths, 50_000);
        assert_eq!(Fault::parse("connect:5xx:1").unwrap().code, 554);
        assert!(Fault::parse("rcpt:250:0.1").is_err());
        assert!(Fault::parse("rcpt:450:1.5").is_err());
        assert!(Fault::parse("rcpt:450").is_err());
        assert!(Fault::parse("body:450:0.1").is_err());
        assert_eq!(
            parse_delay("rcpt:50ms"),
            Ok((Stage::Rcpt, Duration::from_millis(50)))
        );
        assert!(parse_delay("rcpt").is_err());
    }

    #[test]
    fn every_kth_event_fails_exactly() {
        let plan = FaultPlan {
            faults: vec![
                Fault::parse("rcpt:450:0.1").unwrap(),
                Fault::parse("rcpt:550:0.05").unwrap(),
                Fault::parse("dot:554:0.5").unwrap(),
            ],
            ..FaultPlan::default()
        };
        let mut injector = Injector::new(&plan);
        let decisions: Vec<Option<u16>> = (0..1000)
            .map(|_| injector.decide(Stage::Rcpt).map(|i| plan.faults[i].code))
            .collect();
        assert_eq!(decisions.iter().filter(|d| **d == Some(450)).count(), 100);
        // When both are due at once the second waits one event.
        let refused_550 = decisions.iter().filter(|d| **d == Some(550)).count();
        assert!((49..=50).contains(&refused_550), "{refused_550}");
        assert_eq!(decisions[9], Some(450), "the 10th fails");
        assert_eq!(decisions[0], None);
        let dots = (0..10)
            .filter(|_| injector.decide(Stage::Dot).is_some())
            .count();
        assert_eq!(dots, 5);
        assert_eq!(injector.decide(Stage::Mail), None);
    }

    #[test]
    fn parses_reply_texts() {
        let f =
            Fault::parse_reply("RCPT:0.3:421 4.7.0 [TSS04] Messages temporarily deferred: see x")
                .unwrap();
        assert_eq!((f.stage, f.code, f.millionths), (Stage::Rcpt, 421, 300_000));
        assert_eq!(
            f.reply(),
            "421 4.7.0 [TSS04] Messages temporarily deferred: see x\r\n"
        );
        let f = Fault::parse_reply("end-of-data:50%:451 4.7.28 slow down").unwrap();
        assert_eq!((f.stage, f.code), (Stage::Dot, 451));
        assert_eq!(Fault::parse_reply("ehlo:1:554").unwrap().stage, Stage::Helo);
        assert_eq!(
            Fault::parse("mail:451:1").unwrap().reply(),
            "451 4.7.0 Injected failure at mail\r\n"
        );
        for bad in [
            "rcpt:0.3",
            "rcpt:0.3:250 ok",
            "rcpt:2:421 x",
            "rcpt:0.3:4210 x",
            "body:0.3:421 x",
            "rcpt:0.3:421 a\r\nb",
        ] {
            assert!(Fault::parse_reply(bad).is_err(), "{bad}");
        }
    }
}
