//! The shared engine: all bucket state in Redis, one atomic Lua script per
//! admission (every layer plus the deployment choice in one round trip), so
//! any number of replicas enforce one set of limits exactly. Time comes from
//! Redis (`TIME`), not from the replicas' clocks.

use super::bucket::Bucket;
use super::engine::{Charge, Decision, Refused, StoreError};
use super::gcra::Standing;
use crate::infra::redis::SharedRedis;

/// Mirrors `gcra::decide`, `standing` and `used`. Times are seconds since
/// 2023-11-14 (keeps f64 precision), stored with 17 significant digits.
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = (tonumber(t[1]) - 1700000000) + tonumber(t[2]) / 1000000
local nreq, ncand = tonumber(ARGV[1]), tonumber(ARGV[2])
local sizes, a = {}, 3
for c = 1, ncand do sizes[c] = tonumber(ARGV[a]); a = a + 1 end
local unit, cap, units, tat = {}, {}, {}, {}
for k = 1, #KEYS do
  unit[k], cap[k], units[k] = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local v = redis.call('GET', KEYS[k])
  tat[k] = v and tonumber(v) or 0
end
local function decide(k)
  if units[k] > cap[k] then return nil, -1 end
  local new = math.max(tat[k], now) + units[k] * unit[k]
  local excess = new - now - cap[k] * unit[k]
  if excess <= math.min(unit[k] * 0.001, 0.000001) then return new, 0 end
  return nil, excess
end
local function used(k)
  local backlog = math.max(tat[k] - now, 0)
  return cap[k] - math.max(math.floor(cap[k] - backlog / unit[k] + 1e-9), 0)
end
local new = {}
-- Reply: status, three detail slots, then remaining and reset per required bucket.
local function reply(status, a1, a2, a3, committed)
  local out = {status, a1, a2, a3}
  for k = 1, nreq do
    local at = committed and new[k] or tat[k]
    local backlog = math.max(at - now, 0)
    out[#out + 1] = math.max(math.floor(cap[k] - backlog / unit[k] + 1e-9), 0)
    out[#out + 1] = tostring(backlog)
  end
  return out
end
local function refusal(k, w)
  if w < 0 then return reply(-1, k - 1, '0', 0, false) end
  return reply(0, k - 1, tostring(w), used(k), false)
end
-- Returns nil when every bucket in [first, last] admits, else the worst one.
local function check(first, last)
  local worst_k, worst_w = nil, 0
  for k = first, last do
    local n, w = decide(k)
    if n then new[k] = n
    elseif w < 0 then return k, w
    elseif w > worst_w then worst_k, worst_w = k, w end
  end
  return worst_k, worst_w
end
local bad_k, bad_w = check(1, nreq)
if bad_k then return refusal(bad_k, bad_w) end
local chosen, first, cfirst, clast = -1, nreq + 1, 0, -1
local best_k, best_w = nil, nil
for c = 1, ncand do
  local last = first + sizes[c] - 1
  local k, w = check(first, last)
  if not k then chosen, cfirst, clast = c - 1, first, last; break end
  if best_k == nil or (w >= 0 and (best_w < 0 or w < best_w)) then best_k, best_w = k, w end
  first = last + 1
end
if ncand > 0 and chosen < 0 then return refusal(best_k, best_w) end
local function set(k)
  local ttl = math.ceil((new[k] - now) * 1000) + 1000
  redis.call('SET', KEYS[k], string.format('%.17g', new[k]), 'PX', ttl)
end
for k = 1, nreq do set(k) end
for k = cfirst, clast do set(k) end
return reply(1, chosen, '0', 0, true)
"#;

/// ARGV: per key `unit_secs, delta_units`. Mirrors `gcra::adjust`.
const ADJUST: &str = r#"
local t = redis.call('TIME')
local now = (tonumber(t[1]) - 1700000000) + tonumber(t[2]) / 1000000
for k = 1, #KEYS do
  local unit, delta = tonumber(ARGV[2 * k - 1]), tonumber(ARGV[2 * k])
  local v = redis.call('GET', KEYS[k])
  local tat = v and tonumber(v) or 0
  local new = math.max(math.max(tat, now) + delta * unit, now)
  if new > now then
    redis.call('SET', KEYS[k], string.format('%.17g', new), 'PX', math.ceil((new - now) * 1000) + 1000)
  else
    redis.call('DEL', KEYS[k])
  end
end
return 1
"#;

pub struct RedisEngine {
    redis: SharedRedis,
    admit: redis::Script,
    adjust: redis::Script,
}

impl RedisEngine {
    pub fn new(redis: SharedRedis) -> Self {
        Self {
            redis,
            admit: redis::Script::new(ADMIT),
            adjust: redis::Script::new(ADJUST),
        }
    }

    pub async fn admit(
        &self,
        required: &[Charge<'_>],
        candidates: &[Vec<Charge<'_>>],
    ) -> Result<Decision, StoreError> {
        let mut invocation = self.admit.prepare_invoke();
        invocation.arg(required.len()).arg(candidates.len());
        for group in candidates {
            invocation.arg(group.len());
        }
        for charge in required.iter().chain(candidates.iter().flatten()) {
            let shape = charge.bucket.shape;
            invocation
                .key(&charge.bucket.redis_key)
                .arg(shape.unit_secs())
                .arg(shape.capacity())
                .arg(charge.units);
        }
        let reply: Vec<redis::Value> = self
            .redis
            .run(|mut manager| async move { invocation.invoke_async(&mut manager).await })
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        parse_admit(&reply, required.len()).map_err(StoreError)
    }

    pub async fn adjust(&self, changes: &[(&Bucket, i64)]) -> Result<(), StoreError> {
        let mut invocation = self.adjust.prepare_invoke();
        for (bucket, delta) in changes {
            invocation
                .key(&bucket.redis_key)
                .arg(bucket.shape.unit_secs())
                .arg(*delta);
        }
        self.redis
            .run(|mut manager| async move { invocation.invoke_async::<i64>(&mut manager).await })
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(())
    }
}

fn int(value: Option<&redis::Value>) -> Result<i64, String> {
    match value {
        Some(redis::Value::Int(n)) => Ok(*n),
        other => Err(format!("unexpected limiter reply element {other:?}")),
    }
}

fn float(value: Option<&redis::Value>) -> Result<f64, String> {
    match value {
        Some(redis::Value::BulkString(bytes)) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| "unparseable number in limiter reply".to_owned()),
        other => int(other).map(|n| n as f64),
    }
}

fn parse_admit(reply: &[redis::Value], required: usize) -> Result<Decision, String> {
    let position = |v| usize::try_from(int(v)?).map_err(|e| e.to_string());
    let result = match int(reply.first())? {
        1 => Ok(usize::try_from(int(reply.get(1))?).ok()),
        0 => Err(Refused::Wait {
            position: position(reply.get(1))?,
            wait_secs: float(reply.get(2))?,
            used: u64::try_from(int(reply.get(3))?).unwrap_or(0),
        }),
        _ => Err(Refused::Never {
            position: position(reply.get(1))?,
        }),
    };
    let standings = (0..required)
        .map(|i| {
            Ok(Standing {
                limit: 0,
                remaining: u64::try_from(int(reply.get(4 + 2 * i))?).unwrap_or(0),
                reset_secs: float(reply.get(5 + 2 * i))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Decision { result, standings })
}
