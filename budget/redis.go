package budget

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisShared keeps the partner window in Redis: a sorted set of grant
// times (Redis's own clock, so the processes' clocks need not agree),
// trimmed and counted atomically by a script. The set never holds more than
// the limit's requests.
type RedisShared struct {
	client redis.Scripter
	grants string // sorted set: one member per grant, scored by its time (µs)
	seq    string // counter that makes members unique
	peers  string // sorted set: process id → last heartbeat (µs)
	id     string
}

// NewRedisShared uses client with keys under prefix (one hash tag, so the
// keys live on one Redis Cluster slot).
func NewRedisShared(client redis.Scripter, prefix string) *RedisShared {
	return NewRedisWindow(client, prefix, "partner")
}

// NewRedisWindow is NewRedisShared for the window named name: several
// windows under one prefix (one per user, say) share the other keys.
func NewRedisWindow(client redis.Scripter, prefix, name string) *RedisShared {
	var id [8]byte
	_, _ = rand.Read(id[:])
	base := prefix + "{budget}:"
	return &RedisShared{client: client, grants: base + name, seq: base + "seq", peers: base + "peers", id: hex.EncodeToString(id[:])}
}

const luaNow = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
`

var takeScript = redis.NewScript(luaNow + `
local per, n, units = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - per)
local over = redis.call('ZCARD', KEYS[1]) + units - n
if over <= 0 then
	for i = 1, units do
		redis.call('ZADD', KEYS[1], now, ARGV[3] .. ':' .. redis.call('INCR', KEYS[2]))
	end
	redis.call('PEXPIRE', KEYS[1], math.ceil(per / 1000) + 1000)
	return 0
end
-- The over-th oldest grant must leave the window first.
local oldest = redis.call('ZRANGE', KEYS[1], over - 1, over - 1, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + per - now)
`)

var absorbScript = redis.NewScript(luaNow + `
local per = tonumber(ARGV[1])
for i = 3, #ARGV do
	local at = now - tonumber(ARGV[i])
	if at > now - per then
		redis.call('ZADD', KEYS[1], at, ARGV[2] .. ':' .. redis.call('INCR', KEYS[2]))
	end
end
redis.call('PEXPIRE', KEYS[1], math.ceil(per / 1000) + 1000)
return 1
`)

var peersScript = redis.NewScript(luaNow + `
local ttl = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl / 1000) * 2 + 1000)
return redis.call('ZCARD', KEYS[1])
`)

// Take implements Shared.
func (r *RedisShared) Take(ctx context.Context, l Limit, units int) (time.Duration, error) {
	wait, err := takeScript.Run(ctx, r.client, []string{r.grants, r.seq}, l.Per.Microseconds(), l.Requests, r.id, max(units, 1)).Int64()
	if err != nil {
		return 0, err
	}
	return time.Duration(wait) * time.Microsecond, nil
}

// Absorb implements Shared.
func (r *RedisShared) Absorb(ctx context.Context, l Limit, ages []time.Duration) error {
	args := []any{l.Per.Microseconds(), r.id}
	for _, a := range ages {
		args = append(args, a.Microseconds())
	}
	return absorbScript.Run(ctx, r.client, []string{r.grants, r.seq}, args...).Err()
}

// Peers implements Shared.
func (r *RedisShared) Peers(ctx context.Context, ttl time.Duration) (int, error) {
	n, err := peersScript.Run(ctx, r.client, []string{r.peers}, ttl.Microseconds(), r.id).Int()
	return n, err
}
