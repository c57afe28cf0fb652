// Package usage counts what each tenant spends in Zapier's units (tasks,
// action runs and MCP tool calls by outcome, trigger events delivered, API
// calls spent from the request budget), in hourly buckets kept for a
// retention, enforces per-tenant task quotas before a call is made (a run
// or a tool call reserves its tasks and gives them back when it fails), and
// tells the partner once when a tenant crosses 80 % and 100 % of its quota.
//
// Tenants and users are named at rest by their keyed names
// (gateway.Namespace: TenantName, Name), never in clear. The memory backend
// is exact on one gateway; the Redis backend is one count for every gateway
// sharing it (reservations are one Lua script, so a quota holds across
// gateways). It imports no Caddy package.
package usage

import (
	"context"
	"time"
)

// Outcomes counts something by how it ended.
type Outcomes struct {
	Success int64 `json:"success"`
	Error   int64 `json:"error"`
}

// Counts is what was spent: in one hour bucket, or summed over a range.
type Counts struct {
	// Tasks in Zapier's unit: a successful action run is RunTasks (default
	// 1), a successful MCP tool call MCPTasks (default 2), a failed one 0.
	// A run the gateway answered 202 for (still running) keeps its task.
	Tasks         int64    `json:"tasks"`
	ActionRuns    Outcomes `json:"action_runs"`
	MCPCalls      Outcomes `json:"mcp_calls"`
	TriggerEvents int64    `json:"trigger_events"`
	// APICalls are the calls to Zapier's API spent from the request budget
	// on the tenant's behalf (counted per tenant only).
	APICalls int64 `json:"api_calls"`
}

// Add adds o to c.
func (c *Counts) Add(o Counts) {
	c.Tasks += o.Tasks
	c.ActionRuns.Success += o.ActionRuns.Success
	c.ActionRuns.Error += o.ActionRuns.Error
	c.MCPCalls.Success += o.MCPCalls.Success
	c.MCPCalls.Error += o.MCPCalls.Error
	c.TriggerEvents += o.TriggerEvents
	c.APICalls += o.APICalls
}

// IsZero reports whether nothing is counted.
func (c Counts) IsZero() bool { return c == Counts{} }

// Field names of a bucket at rest (the Redis hash's fields; a user's are
// prefixed with its keyed name and ":").
const (
	fTasks    = "t"
	fRunOK    = "rs"
	fRunErr   = "re"
	fMCPOK    = "ms"
	fMCPErr   = "me"
	fTriggers = "tr"
	fAPI      = "api"
)

var fieldNames = []string{fTasks, fRunOK, fRunErr, fMCPOK, fMCPErr, fTriggers, fAPI}

// fields lists c's fields with their values.
func (c Counts) fields() map[string]int64 {
	return map[string]int64{fTasks: c.Tasks, fRunOK: c.ActionRuns.Success, fRunErr: c.ActionRuns.Error,
		fMCPOK: c.MCPCalls.Success, fMCPErr: c.MCPCalls.Error, fTriggers: c.TriggerEvents, fAPI: c.APICalls}
}

// set sets field name of c to v.
func (c *Counts) set(name string, v int64) {
	switch name {
	case fTasks:
		c.Tasks = v
	case fRunOK:
		c.ActionRuns.Success = v
	case fRunErr:
		c.ActionRuns.Error = v
	case fMCPOK:
		c.MCPCalls.Success = v
	case fMCPErr:
		c.MCPCalls.Error = v
	case fTriggers:
		c.TriggerEvents = v
	case fAPI:
		c.APICalls = v
	}
}

// Hour is a bucket's index: hours since the Unix epoch, UTC.
type Hour int64

// HourOf is t's bucket.
func HourOf(t time.Time) Hour { return Hour(t.Unix() / 3600) }

// Time is the hour's start.
func (h Hour) Time() time.Time { return time.Unix(int64(h)*3600, 0).UTC() }

// Backend stores the hourly buckets of every tenant. tenant and user are
// keyed names (never an identity in clear); user "" is the tenant's total
// alone.
type Backend interface {
	// Add adds d to the tenant's bucket of hour and, when user is not "",
	// to the user's part of it.
	Add(ctx context.Context, tenant, user string, hour Hour, d Counts) error
	// Reserve adds n tasks to hour (tenant and user) when the tenant's
	// tasks over the window hours ending with hour, plus n, stay within
	// limit; atomically, for every gateway sharing the backend. It returns
	// the tasks of each hour of the window before the reservation, oldest
	// first.
	Reserve(ctx context.Context, tenant, user string, hour Hour, window int, limit, n int64) (ok bool, perHour []int64, err error)
	// Read returns the non-empty buckets of the tenant (of the user in it,
	// when user is not "") in [from, to).
	Read(ctx context.Context, tenant, user string, from, to Hour) (map[Hour]Counts, error)
	// ReadUsers sums each user's part of the tenant's buckets in
	// [from, to), by the users' keyed names (non-zero sums only).
	ReadUsers(ctx context.Context, tenant string, from, to Hour) (map[string]Counts, error)
	// ForgetUsers deletes the per-user counts of tenant: user's, or every
	// user's when user is "". The tenant's totals stay. It reports how
	// many buckets it changed.
	ForgetUsers(ctx context.Context, tenant, user string) (int, error)
	// Once reports true for the first call with key within ttl, on every
	// gateway sharing the backend.
	Once(ctx context.Context, key string, ttl time.Duration) (bool, error)
}
