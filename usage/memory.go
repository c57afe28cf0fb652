package usage

import (
	"context"
	"sync"
	"time"
)

// DefaultRetention is how long buckets are kept: a little over a year, so
// a year-on-year comparison is possible.
const DefaultRetention = 400 * 24 * time.Hour

// Memory is the backend of a single gateway: exact, and gone when the
// process ends (a config reload keeps it when the host pools it).
type Memory struct {
	// Retention: buckets older are pruned. Default DefaultRetention.
	Retention time.Duration
	// Now is the clock (tests); default time.Now.
	Now func() time.Time

	mu      sync.Mutex
	tenants map[string]map[Hour]*memBucket
	once    map[string]time.Time
	pruned  Hour
}

type memBucket struct {
	total Counts
	users map[string]Counts
}

// SetRetention changes the retention (a config reload).
func (m *Memory) SetRetention(d time.Duration) {
	m.mu.Lock()
	m.Retention = d
	m.pruned = 0
	m.mu.Unlock()
}

func (m *Memory) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Memory) retentionHours() Hour {
	r := m.Retention
	if r <= 0 {
		r = DefaultRetention
	}
	return Hour((r + time.Hour - 1) / time.Hour)
}

// pruneLocked drops the buckets past the retention, at most once an hour.
func (m *Memory) pruneLocked() {
	now := m.now()
	cur := HourOf(now)
	if cur == m.pruned {
		return
	}
	m.pruned = cur
	oldest := cur - m.retentionHours() + 1
	for t, hours := range m.tenants {
		for h := range hours {
			if h < oldest {
				delete(hours, h)
			}
		}
		if len(hours) == 0 {
			delete(m.tenants, t)
		}
	}
	for k, until := range m.once {
		if !now.Before(until) {
			delete(m.once, k)
		}
	}
}

func (m *Memory) bucketLocked(tenant string, hour Hour) *memBucket {
	if m.tenants == nil {
		m.tenants = map[string]map[Hour]*memBucket{}
	}
	hours := m.tenants[tenant]
	if hours == nil {
		hours = map[Hour]*memBucket{}
		m.tenants[tenant] = hours
	}
	b := hours[hour]
	if b == nil {
		b = &memBucket{}
		hours[hour] = b
	}
	return b
}

// Add adds d to the bucket.
func (m *Memory) Add(_ context.Context, tenant, user string, hour Hour, d Counts) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked()
	m.addLocked(tenant, user, hour, d)
	return nil
}

func (m *Memory) addLocked(tenant, user string, hour Hour, d Counts) {
	b := m.bucketLocked(tenant, hour)
	b.total.Add(d)
	if user != "" {
		if b.users == nil {
			b.users = map[string]Counts{}
		}
		u := b.users[user]
		u.Add(d)
		b.users[user] = u
	}
}

// Reserve adds n tasks when the window stays within limit.
func (m *Memory) Reserve(_ context.Context, tenant, user string, hour Hour, window int, limit, n int64) (bool, []int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked()
	per := make([]int64, window)
	var used int64
	hours := m.tenants[tenant]
	for i := range window {
		if b := hours[hour-Hour(window-1-i)]; b != nil {
			per[i] = b.total.Tasks
			used += b.total.Tasks
		}
	}
	if limit > 0 && used+n > limit {
		return false, per, nil
	}
	m.addLocked(tenant, user, hour, Counts{Tasks: n})
	return true, per, nil
}

// Read returns the non-empty buckets in [from, to).
func (m *Memory) Read(_ context.Context, tenant, user string, from, to Hour) (map[Hour]Counts, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked()
	out := map[Hour]Counts{}
	for h, b := range m.tenants[tenant] {
		if h < from || h >= to {
			continue
		}
		c := b.total
		if user != "" {
			c = b.users[user]
		}
		if !c.IsZero() {
			out[h] = c
		}
	}
	return out, nil
}

// ReadUsers sums each user's part.
func (m *Memory) ReadUsers(_ context.Context, tenant string, from, to Hour) (map[string]Counts, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]Counts{}
	for h, b := range m.tenants[tenant] {
		if h < from || h >= to {
			continue
		}
		for u, c := range b.users {
			sum := out[u]
			sum.Add(c)
			out[u] = sum
		}
	}
	for u, c := range out {
		if c.IsZero() {
			delete(out, u)
		}
	}
	return out, nil
}

// ForgetUsers deletes per-user counts.
func (m *Memory) ForgetUsers(_ context.Context, tenant, user string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, b := range m.tenants[tenant] {
		switch {
		case user == "" && len(b.users) > 0:
			b.users = nil
			n++
		case user != "":
			if _, ok := b.users[user]; ok {
				delete(b.users, user)
				n++
			}
		}
	}
	return n, nil
}

// Once marks key for ttl.
func (m *Memory) Once(_ context.Context, key string, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if until, ok := m.once[key]; ok && now.Before(until) {
		return false, nil
	}
	if m.once == nil {
		m.once = map[string]time.Time{}
	}
	m.once[key] = now.Add(ttl)
	return true, nil
}

var _ Backend = (*Memory)(nil)
