package usage

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/zapgate/caddy-zapier/budget"
)

// Limit is a task quota: at most Tasks in any rolling Period (whole hours,
// over the hourly buckets).
type Limit struct {
	Tasks  int64
	Period time.Duration
}

// Off reports whether there is no quota.
func (l Limit) Off() bool { return l.Tasks <= 0 || l.Period <= 0 }

func (l Limit) String() string {
	if l.Off() {
		return "off"
	}
	return strconv.FormatInt(l.Tasks, 10) + "/" + PeriodString(l.Period)
}

// hours is the window in hourly buckets.
func (l Limit) hours() int { return int(l.Period / time.Hour) }

// ParseLimit reads "<tasks>/<period>" (the form of api_budget's limits,
// budget.ParseLimit); the period is whole hours (1h, 24h, 720h; with
// caddy.ParseDuration also 30d).
func ParseLimit(s string, parseDuration func(string) (time.Duration, error)) (Limit, error) {
	l, err := budget.ParseLimit(s, parseDuration)
	if err != nil {
		return Limit{}, err
	}
	if l.Per < time.Hour || l.Per%time.Hour != 0 {
		return Limit{}, fmt.Errorf("quota %q: the period must be whole hours (1h, 24h, 720h): usage is counted in hourly buckets", s)
	}
	return Limit{Tasks: int64(l.Requests), Period: l.Per}, nil
}

// Quotas are the task quotas: Default for every tenant, Tenants for the
// named ones (instead of Default).
type Quotas struct {
	Default Limit
	Tenants map[string]Limit
}

// For is tenant's quota.
func (q Quotas) For(tenant string) Limit {
	if l, ok := q.Tenants[tenant]; ok {
		return l
	}
	return q.Default
}

// Any reports whether some quota is set.
func (q Quotas) Any() bool {
	if !q.Default.Off() {
		return true
	}
	for _, l := range q.Tenants {
		if !l.Off() {
			return true
		}
	}
	return false
}

// Check refuses quotas longer than the retention (their window would read
// buckets already pruned).
func (q Quotas) Check(retention time.Duration) error {
	var errs []error
	check := func(what string, l Limit) {
		if !l.Off() && l.Period > retention {
			errs = append(errs, fmt.Errorf("quota %s: the period %s is longer than the usage retention %s", what, l.Period, retention))
		}
	}
	check("tasks", q.Default)
	for t, l := range q.Tenants {
		check("tenant "+strconv.Quote(t), l)
	}
	return errors.Join(errs...)
}

// retryAfter is how long until a window of the quota (per: tasks of each
// hour, oldest first, the last the current hour) has room for n more
// tasks: buckets leave the window at hour boundaries, oldest first.
func retryAfter(now time.Time, cur Hour, l Limit, per []int64, n int64) time.Duration {
	var used int64
	for _, v := range per {
		used += v
	}
	window := Hour(len(per))
	for i, v := range per {
		used -= v
		if used+n <= l.Tasks {
			// Bucket i (hour cur-window+1+i) leaves the window when the
			// current hour is past it by the window.
			leaves := (cur - window + 1 + Hour(i) + window).Time()
			return max(leaves.Sub(now), time.Second)
		}
	}
	return l.Period
}
