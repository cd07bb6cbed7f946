//! The shared rate limiter in Redis: a generic cell rate algorithm (GCRA)
//! per site and rate, run atomically by a Lua script (EVALSHA) that
//! grants up to N tokens per call, and the heartbeat script that counts
//! the hosts alive. Only the client thread calls these; it refuses to
//! hold state of its own (the state is the key in Redis).
//!
//! GCRA, in its virtual-scheduling form: the ATM Forum's Traffic
//! Management Specification 4.0 (af-tm-0056.000, 1996, section 4.4.2)
//! and ITU-T I.371; as a rate limiter over Redis after Brandur Leach,
//! "Rate Limiting, Cells, and GCRA" (brandur.org/rate-limiting, 2015)
//! and his redis-cell module. The key holds TAT, the theoretical arrival
//! time of the next cell; with emission interval T = period / count and
//! a burst of B cells (tolerance τ = B*T), k cells conform at `now` when
//! `TAT + k*T - τ <= now`; granting them moves TAT to `max(TAT, now) +
//! k*T`. The time is Redis's own (`TIME`), so the hosts' clocks do not
//! matter.
//!
//! The burst across hosts is a tenth of a period's worth (at least what
//! one ask wants), not the whole period this host's own bucket allows
//! after an idle spell: many hosts together stay close to the rate in
//! every window, and a grant is never larger than a burst.

use std::time::Duration;

use crate::shaping::Rate;

/// KEYS[1]: the rate's key. ARGV: period (us), count, tokens wanted,
/// burst (tokens). Returns {granted, us until what was wanted is there}.
pub const GCRA: &str = r#"
redis.replicate_commands()
local period = tonumber(ARGV[1])
local count = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local interval = period / count
local tolerance = tonumber(ARGV[4]) * interval
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local room = math.floor((now + tolerance - tat) / interval + 1e-6)
local grant = math.min(want, math.max(room, 0))
if grant > 0 then
  tat = tat + grant * interval
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
local wait = tat + want * interval - tolerance - now
if wait < 0 then wait = 0 end
return {grant, math.ceil(wait)}
"#;

/// KEYS[1]: the sorted set of hosts. ARGV: this host's id, the window
/// (ms). Returns the hosts heard from within the window, this one
/// included.
pub const HEARTBEAT: &str = r#"
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('PEXPIRE', KEYS[1], window * 2)
return redis.call('ZCARD', KEYS[1])
"#;

/// The most a rate lets go at once across hosts: a tenth of a period's
/// worth, at least one.
pub fn burst_for(rate: Rate) -> u32 {
    rate.count.div_ceil(10).max(1)
}

/// One ask of the limiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// The rate's key in Redis.
    pub key: String,
    pub rate: Rate,
    pub want: u32,
}

/// Its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub tokens: u32,
    /// Until a full batch of what was asked is there.
    pub wait: Duration,
}

/// The scripts' digests, loaded on a connection.
#[derive(Debug, Clone)]
pub struct Scripts {
    gcra: redis::Script,
    heartbeat: redis::Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            gcra: redis::Script::new(GCRA),
            heartbeat: redis::Script::new(HEARTBEAT),
        }
    }
}

impl Scripts {
    /// Loads both scripts (after a connect: a restarted Redis has none).
    pub fn load(&self, con: &mut redis::Connection) -> redis::RedisResult<()> {
        for (text, hash) in [
            (GCRA, self.gcra.get_hash()),
            (HEARTBEAT, self.heartbeat.get_hash()),
        ] {
            let loaded: String = redis::cmd("SCRIPT").arg("LOAD").arg(text).query(con)?;
            if loaded != hash {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "script digest differs",
                )));
            }
        }
        Ok(())
    }

    /// Asks for every lease at once: one round trip (a pipeline of
    /// EVALSHA), answers in order.
    pub fn grant(
        &self,
        con: &mut redis::Connection,
        asks: &[Ask],
    ) -> redis::RedisResult<Vec<Grant>> {
        if asks.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for ask in asks {
            let period = u64::try_from(ask.rate.per.as_micros()).unwrap_or(u64::MAX);
            let burst = burst_for(ask.rate).max(ask.want);
            pipe.cmd("EVALSHA")
                .arg(self.gcra.get_hash())
                .arg(1)
                .arg(&ask.key)
                .arg(period)
                .arg(ask.rate.count)
                .arg(ask.want)
                .arg(burst);
        }
        let answers: Vec<(i64, i64)> = pipe.query(con)?;
        Ok(answers
            .into_iter()
            .map(|(tokens, wait)| Grant {
                tokens: u32::try_from(tokens.max(0)).unwrap_or(u32::MAX),
                wait: Duration::from_micros(u64::try_from(wait.max(0)).unwrap_or(0)),
            })
            .collect())
    }

    /// Says this host is alive; returns the hosts alive within `window`.
    pub fn heartbeat(
        &self,
        con: &mut redis::Connection,
        hosts_key: &str,
        id: &str,
        window: Duration,
    ) -> redis::RedisResult<usize> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.heartbeat
            .key(hosts_key)
            .arg(id)
            .arg(window_ms)
            .invoke(con)
    }
}
