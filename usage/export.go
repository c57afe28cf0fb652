package usage

import (
	"context"
	"encoding/csv"
	"io"
	"sort"
	"strconv"
	"time"

	"github.com/zapgate/caddy-zapier/gateway"
)

// Query is what an export asks for (POST /zapier/usage's body).
type Query struct {
	Tenant string `json:"tenant"`
	User   string `json:"user,omitempty"`
	// Since and Until bound the export (RFC 3339); they are widened to
	// whole hours (since down, until up). Default: everything retained,
	// until now.
	Since string `json:"since,omitempty"`
	Until string `json:"until,omitempty"`
	// By splits the range into buckets: hour, day or month (UTC); "" is
	// one total.
	By string `json:"by,omitempty"`
}

// Bucket is one slice of an export.
type Bucket struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Counts
}

// Report is an export: the totals over [since, until) and the buckets.
type Report struct {
	Tenant string    `json:"tenant"`
	User   string    `json:"user,omitempty"`
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until"`
	Counts
	Buckets []Bucket `json:"buckets"`
	// Users is each user's part of a tenant's export, by keyed name (the
	// gateway never stores a user id in clear); absent when the request
	// named a user.
	Users []UserCounts `json:"users,omitempty"`
}

// UserCounts is one user's part of a tenant's usage.
type UserCounts struct {
	User string `json:"user"`
	Counts
}

// Export answers q: a tenant never seen answers zeros. A bad query is a
// *gateway.Error 400.
func (m *Meter) Export(ctx context.Context, q Query) (Report, error) {
	if !gateway.ValidIdentity(q.Tenant) || (q.User != "" && !gateway.ValidIdentity(q.User)) {
		return Report{}, gateway.BadRequest("give tenant, and user for one user's usage (1-256 printable bytes each)")
	}
	switch q.By {
	case "", "hour", "day", "month":
	default:
		return Report{}, gateway.BadRequest("by must be hour, day or month")
	}
	now := m.cfg.Now()
	from := HourOf(now.Add(-m.cfg.Retention)) + 1
	to := HourOf(now) + 1
	if q.Since != "" {
		t, err := time.Parse(time.RFC3339, q.Since)
		if err != nil {
			return Report{}, gateway.BadRequest("since must be an RFC 3339 time")
		}
		from = HourOf(t)
	}
	if q.Until != "" {
		t, err := time.Parse(time.RFC3339, q.Until)
		if err != nil {
			return Report{}, gateway.BadRequest("until must be an RFC 3339 time")
		}
		to = HourOf(t.Add(time.Hour - time.Nanosecond))
	}
	if to < from {
		return Report{}, gateway.BadRequest("until must not be before since")
	}
	tenant, user, err := m.names(ctx, gateway.Identity{Tenant: q.Tenant, User: q.User})
	if err != nil {
		return Report{}, err
	}
	hours, err := m.cfg.Backend.Read(ctx, tenant, user, from, to)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Tenant: q.Tenant, User: q.User, Since: from.Time(), Until: to.Time(), Buckets: []Bucket{}}
	byStart := map[time.Time]*Bucket{}
	for h, c := range hours {
		rep.Counts.Add(c)
		if q.By == "" {
			continue
		}
		start, end := span(h.Time(), q.By)
		b := byStart[start]
		if b == nil {
			b = &Bucket{Start: start, End: end}
			byStart[start] = b
		}
		b.Counts.Add(c)
	}
	for _, b := range byStart {
		if !b.Counts.IsZero() {
			rep.Buckets = append(rep.Buckets, *b)
		}
	}
	sort.Slice(rep.Buckets, func(i, j int) bool { return rep.Buckets[i].Start.Before(rep.Buckets[j].Start) })
	if q.User == "" {
		users, err := m.cfg.Backend.ReadUsers(ctx, tenant, from, to)
		if err != nil {
			return Report{}, err
		}
		for u, c := range users {
			rep.Users = append(rep.Users, UserCounts{User: u, Counts: c})
		}
		sort.Slice(rep.Users, func(i, j int) bool { return rep.Users[i].User < rep.Users[j].User })
	}
	return rep, nil
}

// span is the bucket of by that t falls in (UTC).
func span(t time.Time, by string) (time.Time, time.Time) {
	t = t.UTC()
	switch by {
	case "day":
		s := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		return s, s.AddDate(0, 0, 1)
	case "month":
		s := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return s, s.AddDate(0, 1, 0)
	}
	s := t.Truncate(time.Hour)
	return s, s.Add(time.Hour)
}

// CSVHeader is the first line of WriteCSV.
var CSVHeader = []string{"tenant", "user", "start", "end", "tasks", "action_runs_success", "action_runs_error",
	"mcp_calls_success", "mcp_calls_error", "trigger_events", "api_calls"}

// WriteCSV writes rep as CSV: a row per bucket, or one row for the whole
// range when the report has no buckets.
func WriteCSV(w io.Writer, rep Report) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	rows := rep.Buckets
	if len(rows) == 0 {
		rows = []Bucket{{Start: rep.Since, End: rep.Until, Counts: rep.Counts}}
	}
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	for _, b := range rows {
		if err := cw.Write([]string{rep.Tenant, rep.User, b.Start.UTC().Format(time.RFC3339), b.End.UTC().Format(time.RFC3339),
			n(b.Tasks), n(b.ActionRuns.Success), n(b.ActionRuns.Error), n(b.MCPCalls.Success), n(b.MCPCalls.Error),
			n(b.TriggerEvents), n(b.APICalls)}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// QuotaState is one tenant's quota and what it spent in the window now.
type QuotaState struct {
	Tenant  string  `json:"tenant,omitempty"`
	Quota   string  `json:"quota"`
	Used    int64   `json:"used"`
	Percent float64 `json:"percent"`
}

// Status is the usage section of GET /zapier/status.
type Status struct {
	Backend   string `json:"backend"`
	Retention string `json:"retention"`
	RunTasks  int64  `json:"action_run_tasks"`
	MCPTasks  int64  `json:"mcp_call_tasks"`
	// DefaultQuota applies to every tenant not named in Tenants.
	DefaultQuota string       `json:"default_quota"`
	Tenants      []QuotaState `json:"tenants,omitempty"`
	Error        string       `json:"error,omitempty"`
}

// Status reports the settings and the named tenants' quota state.
func (m *Meter) Status(ctx context.Context, backend string) Status {
	st := Status{Backend: backend, Retention: PeriodString(m.cfg.Retention), RunTasks: m.cfg.RunTasks, MCPTasks: m.cfg.MCPTasks,
		DefaultQuota: m.cfg.Quotas.Default.String()}
	var names []string
	for t := range m.cfg.Quotas.Tenants {
		names = append(names, t)
	}
	sort.Strings(names)
	for _, t := range names {
		used, err := m.Used(ctx, t)
		if err != nil {
			st.Error = err.Error()
			break
		}
		l := m.cfg.Quotas.Tenants[t]
		qs := QuotaState{Tenant: t, Quota: l.String(), Used: used}
		if !l.Off() {
			qs.Percent = float64(used) * 100 / float64(l.Tasks)
		}
		st.Tenants = append(st.Tenants, qs)
	}
	return st
}

// Used is the tenant's tasks in its quota's window now (the last 30 days
// without a quota).
func (m *Meter) Used(ctx context.Context, tenant string) (int64, error) {
	l := m.cfg.Quotas.For(tenant)
	window := Hour(720)
	if !l.Off() {
		window = Hour(l.hours())
	}
	name, err := m.cfg.Names.TenantName(ctx, tenant)
	if err != nil {
		return 0, err
	}
	cur := HourOf(m.cfg.Now())
	hours, err := m.cfg.Backend.Read(ctx, name, "", cur-window+1, cur+1)
	if err != nil {
		return 0, err
	}
	var used int64
	for _, c := range hours {
		used += c.Tasks
	}
	return used, nil
}
