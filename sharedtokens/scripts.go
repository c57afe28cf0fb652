package sharedtokens

import "github.com/redis/go-redis/v9"

// The scripts run atomically in Redis. Every key they touch carries the same
// {id} hash tag. go-redis runs them with EVALSHA and falls back to EVAL when
// Redis lost its script cache (after a restart).

// acquireScript takes the lease if nobody holds it and returns a fence
// greater than every fence handed out before (the counter is kept at least
// one above the stored token's fence, even if the counter expired). It
// returns 0 if the lease is held, and -1 if the stored token's fence is no
// longer the one the caller saw: a token was published since it looked.
//
//	KEYS: lease, fence counter, token   ARGV: lease TTL ms, counter TTL ms, fence seen
var acquireScript = redis.NewScript(`
local stored = tonumber(redis.call('HGET', KEYS[3], '` + fieldFence + `') or '0')
if stored ~= tonumber(ARGV[3]) then return -1 end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fence = redis.call('INCR', KEYS[2])
if fence <= stored then
	fence = stored + 1
	redis.call('SET', KEYS[2], fence)
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], fence, 'PX', ARGV[1])
return fence
`)

// publishScript stores a sealed token only if its fence is newer than the
// stored one (a lease holder that stalled past its lease loses to the one
// that took over), expires it with the token, and releases the lease if it
// is still this fence's. Returns 1 if stored, 0 if fenced off.
//
//	KEYS: token, lease   ARGV: fence, sealed token, fingerprint, expiry (unix ms)
var publishScript = redis.NewScript(`
local stored = tonumber(redis.call('HGET', KEYS[1], '` + fieldFence + `') or '0')
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
if tonumber(ARGV[1]) <= stored then return 0 end
redis.call('HSET', KEYS[1], '` + fieldFence + `', ARGV[1], '` + fieldData + `', ARGV[2], '` + fieldFingerprint + `', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1
`)

// releaseScript drops the lease if it is still this fence's.
//
//	KEYS: lease   ARGV: fence
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// forgetScript drops the stored token if it is still the one with this
// fingerprint; the fence stays.
//
//	KEYS: token   ARGV: fingerprint
var forgetScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], '` + fieldFingerprint + `') == ARGV[1] then
	return redis.call('HDEL', KEYS[1], '` + fieldData + `', '` + fieldFingerprint + `')
end
return 0
`)
