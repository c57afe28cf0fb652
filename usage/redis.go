package usage

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the backend shared by every gateway using one Redis: a hash per
// tenant per hour (key <prefix>usage:{<tenant>}:<hour>, fields for the
// tenant's totals and "<user>:<field>" for each user's part), expiring
// after the retention. Reservations are one Lua script over the window's
// hashes, so two gateways never both take the last task of a quota.
type Redis struct {
	Client *redis.Client
	// Prefix of every key (the tier's prefix and the partner's part).
	Prefix string
	// Retention: each hash expires this long after its last write.
	// Default DefaultRetention.
	Retention time.Duration
}

func (r *Redis) key(tenant string, hour Hour) string {
	// The hash tag keeps a tenant's hours in one slot (Redis Cluster), so
	// one script can read them all.
	return r.Prefix + "usage:{" + tenant + "}:" + strconv.FormatInt(int64(hour), 10)
}

func (r *Redis) ttl() time.Duration {
	if r.Retention <= 0 {
		return DefaultRetention + time.Hour
	}
	return r.Retention + time.Hour
}

// Add adds d to the bucket in one transaction.
func (r *Redis) Add(ctx context.Context, tenant, user string, hour Hour, d Counts) error {
	key := r.key(tenant, hour)
	_, err := r.Client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for f, v := range d.fields() {
			if v == 0 {
				continue
			}
			p.HIncrBy(ctx, key, f, v)
			if user != "" {
				p.HIncrBy(ctx, key, user+":"+f, v)
			}
		}
		p.Expire(ctx, key, r.ttl())
		return nil
	})
	return err
}

// reserveScript: KEYS are the window's hashes, oldest first (the last is
// the current hour); ARGV limit, n, the user's task field ("" none), ttl
// in seconds. It answers {1|0, {tasks of each hour}}.
var reserveScript = redis.NewScript(`
local counts = {}
local used = 0
for i = 1, #KEYS do
  local v = tonumber(redis.call('HGET', KEYS[i], 't') or '0') or 0
  counts[i] = v
  used = used + v
end
local limit = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
if limit > 0 and used + n > limit then
  return {0, counts}
end
local cur = KEYS[#KEYS]
redis.call('HINCRBY', cur, 't', n)
if ARGV[3] ~= '' then
  redis.call('HINCRBY', cur, ARGV[3], n)
end
redis.call('EXPIRE', cur, ARGV[4])
return {1, counts}
`)

// Reserve runs the reservation script.
func (r *Redis) Reserve(ctx context.Context, tenant, user string, hour Hour, window int, limit, n int64) (bool, []int64, error) {
	keys := make([]string, window)
	for i := range window {
		keys[i] = r.key(tenant, hour-Hour(window-1-i))
	}
	userField := ""
	if user != "" {
		userField = user + ":" + fTasks
	}
	res, err := reserveScript.Run(ctx, r.Client, keys, limit, n, userField, int64(r.ttl()/time.Second)).Slice()
	if err != nil {
		return false, nil, err
	}
	per := make([]int64, window)
	if len(res) == 2 {
		if counts, ok := res[1].([]any); ok {
			for i, c := range counts {
				if v, ok := c.(int64); ok && i < window {
					per[i] = v
				}
			}
		}
	}
	ok := len(res) > 0 && res[0] == int64(1)
	return ok, per, nil
}

// tenantKeys lists the tenant's hashes with their hours.
func (r *Redis) tenantKeys(ctx context.Context, tenant string) (map[string]Hour, error) {
	prefix := r.Prefix + "usage:{" + tenant + "}:"
	out := map[string]Hour{}
	iter := r.Client.Scan(ctx, 0, escapeGlob(prefix)+"*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		h, err := strconv.ParseInt(strings.TrimPrefix(k, prefix), 10, 64)
		if err != nil {
			continue
		}
		out[k] = Hour(h)
	}
	return out, iter.Err()
}

// escapeGlob escapes the characters SCAN's MATCH treats as a pattern.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// hashes reads the tenant's hashes of [from, to), by their keys.
func (r *Redis) hashes(ctx context.Context, tenant string, from, to Hour) (map[string]Hour, []string, []*redis.MapStringStringCmd, error) {
	keys, err := r.tenantKeys(ctx, tenant)
	if err != nil {
		return nil, nil, nil, err
	}
	var wanted []string
	for k, h := range keys {
		if h >= from && h < to {
			wanted = append(wanted, k)
		}
	}
	if len(wanted) == 0 {
		return keys, nil, nil, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(wanted))
	_, err = r.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range wanted {
			cmds[i] = p.HGetAll(ctx, k)
		}
		return nil
	})
	return keys, wanted, cmds, err
}

// ReadUsers sums each user's fields.
func (r *Redis) ReadUsers(ctx context.Context, tenant string, from, to Hour) (map[string]Counts, error) {
	_, _, cmds, err := r.hashes(ctx, tenant, from, to)
	if err != nil {
		return nil, err
	}
	out := map[string]Counts{}
	for _, cmd := range cmds {
		for f, v := range cmd.Val() {
			user, name, ok := strings.Cut(f, ":")
			if !ok {
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				continue
			}
			var d Counts
			d.set(name, n)
			sum := out[user]
			sum.Add(d)
			out[user] = sum
		}
	}
	for u, c := range out {
		if c.IsZero() {
			delete(out, u)
		}
	}
	return out, nil
}

// Read returns the non-empty buckets in [from, to).
func (r *Redis) Read(ctx context.Context, tenant, user string, from, to Hour) (map[Hour]Counts, error) {
	keys, wanted, cmds, err := r.hashes(ctx, tenant, from, to)
	if err != nil {
		return nil, err
	}
	out := map[Hour]Counts{}
	prefix := ""
	if user != "" {
		prefix = user + ":"
	}
	for i, k := range wanted {
		var c Counts
		for f, v := range cmds[i].Val() {
			name, ok := strings.CutPrefix(f, prefix)
			if !ok || strings.Contains(name, ":") {
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				continue
			}
			c.set(name, n)
		}
		if !c.IsZero() {
			out[keys[k]] = c
		}
	}
	return out, nil
}

// ForgetUsers deletes per-user fields from each of the tenant's hashes.
func (r *Redis) ForgetUsers(ctx context.Context, tenant, user string) (int, error) {
	keys, err := r.tenantKeys(ctx, tenant)
	if err != nil {
		return 0, err
	}
	n := 0
	for k := range keys {
		var fields []string
		if user != "" {
			for _, f := range fieldNames {
				fields = append(fields, user+":"+f)
			}
		} else {
			all, err := r.Client.HKeys(ctx, k).Result()
			if err != nil {
				return n, err
			}
			for _, f := range all {
				if strings.Contains(f, ":") {
					fields = append(fields, f)
				}
			}
		}
		if len(fields) == 0 {
			continue
		}
		del, err := r.Client.HDel(ctx, k, fields...).Result()
		if err != nil {
			return n, err
		}
		if del > 0 {
			n++
		}
	}
	return n, nil
}

// Once sets key if absent, for ttl.
func (r *Redis) Once(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	return r.Client.SetNX(ctx, r.Prefix+"usage-once:"+key, "1", ttl).Result()
}

var _ Backend = (*Redis)(nil)
