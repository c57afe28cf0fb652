package caddymodule

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/metrics"
	"github.com/zapgate/caddy-zapier/sharedtokens"
	"github.com/zapgate/caddy-zapier/triggers"
	"github.com/zapgate/caddy-zapier/usage"
)

// Usage in Zapier's units, task quotas and the export (package usage):
// the Caddy glue. The counters live in memory (one gateway, kept across
// config reloads) or, with cache.redis, in Redis (one count for every
// gateway sharing it).

func init() {
	caddy.RegisterModule(usageAdmin{})
}

// eventUsageThreshold: a tenant reached 80 % or 100 % of its task quota
// (also sent to zapier_triggers' receiver as a usage.threshold event).
// Data: tenant, percent, tasks, quota, period.
const eventUsageThreshold = "zapier_usage_threshold"

// UsageConfig is how usage is counted.
type UsageConfig struct {
	// Off turns counting (and quotas) off.
	Off bool `json:"off,omitempty"`
	// How long hourly buckets are kept. Default 400d.
	Retention caddy.Duration `json:"retention,omitempty"`
	// Tasks a successful action run costs. Default 1.
	ActionRunTasks *int `json:"action_run_tasks,omitempty"`
	// Tasks a successful MCP tool call costs (a failed one costs none).
	// Default 2.
	MCPCallTasks *int `json:"mcp_call_tasks,omitempty"`
}

// QuotaConfig is the tenants' task quotas: "<tasks>/<period>" (the form of
// api_budget's limits; the period in whole hours), a rolling window over
// the hourly buckets.
type QuotaConfig struct {
	// Every tenant's quota, unless named in Tenants.
	Tasks string `json:"tasks,omitempty"`
	// Quotas of named tenants, instead of Tasks.
	Tenants map[string]string `json:"tenants,omitempty"`
}

// usageMeter is the app's meter and what it is stored in.
type usageMeter struct {
	*usage.Meter
	backend string // memory or redis
}

// provisionUsage builds the meter and hooks it into the request budget.
// It does no network I/O.
func (a *App) provisionUsage(ctx caddy.Context) error {
	if a.Usage == nil {
		a.Usage = new(UsageConfig)
	}
	c := a.Usage
	if c.Off {
		if q := a.Quota; q != nil && (q.Tasks != "" || len(q.Tenants) > 0) {
			return errors.New("zapier: quota needs usage counting: remove usage off, or the quota")
		}
		if a.budget != nil {
			a.budget.OnSpent(nil) // the budget outlives a reload: stop counting into an older config's meter
		}
		return nil
	}
	if c.Retention == 0 {
		c.Retention = caddy.Duration(usage.DefaultRetention)
	}
	if c.Retention < caddy.Duration(time.Hour) {
		return errors.New("zapier: usage retention must be at least 1h")
	}
	runTasks, mcpTasks := int64(usage.DefaultRunTasks), int64(usage.DefaultMCPTasks)
	if c.ActionRunTasks != nil {
		runTasks = int64(*c.ActionRunTasks)
	}
	if c.MCPCallTasks != nil {
		mcpTasks = int64(*c.MCPCallTasks)
	}
	var quotas usage.Quotas
	if q := a.Quota; q != nil {
		var err error
		if quotas, err = usage.ParseQuotas(q.Tasks, q.Tenants, caddy.ParseDuration); err != nil {
			return fmt.Errorf("zapier: %w", err)
		}
	}
	retention := time.Duration(c.Retention)
	var backend usage.Backend
	kind := "memory"
	if r := a.Cache.Redis; r != nil {
		url := caddy.NewReplacer().ReplaceKnown(r.URL, "")
		key := hashHex(url) + "|" + r.Prefix + "|" + time.Duration(r.Timeout).String()
		client, err := usage.SharedClient(key, func() (*redis.Client, error) { return sharedtokens.NewClient(url, time.Duration(r.Timeout)) })
		if err != nil {
			return fmt.Errorf("zapier: usage: %w", err)
		}
		// One count per Zapier client, as the budget's.
		backend = &usage.Redis{Client: client, Prefix: cmp.Or(r.Prefix, sharedtokens.DefaultPrefix) + hashHex(a.ClientID)[:16] + ":", Retention: retention}
		kind = "redis"
	} else {
		mem := usage.SharedMemory(a.ClientID)
		mem.SetRetention(retention)
		backend = mem
	}
	m, err := usage.New(usage.Config{
		Backend: backend, Names: gateway.NewNamespace(newStateKeeper(ctx, ctx.Storage(), 0)),
		Retention: retention, RunTasks: runTasks, MCPTasks: mcpTasks, Quotas: quotas,
		OnThreshold: a.usageThreshold,
		OnError: func(op string, err error) {
			a.logger.Warn("usage: the backend failed; this call is not counted (and not held to its quota)", zap.String("op", op), zap.Error(err))
		},
	})
	if err != nil {
		return fmt.Errorf("zapier: %w", err)
	}
	a.meter = &usageMeter{Meter: m, backend: kind}
	if a.budget != nil {
		a.budget.OnSpent(func(tenant string, units int) {
			if tenant != "" {
				m.APICalls(context.Background(), tenant, units)
			}
		})
	}
	a.registerUserStore(gateway.PhaseLocal, m)
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		for _, col := range usage.Collectors() {
			if err := metrics.Register(reg, col); err != nil {
				return err
			}
		}
	}
	return nil
}

// usageThreshold sends a usage.threshold event to every zapier_triggers
// receiver (signed, retried, dead-lettered like connection events) and
// emits zapier_usage_threshold. The meter calls it once per tenant,
// threshold and quota period across the gateways sharing its backend.
func (a *App) usageThreshold(e usage.ThresholdEvent) {
	data := e.Body()
	body, err := json.Marshal(data)
	if err != nil {
		return
	}
	for _, m := range deliveryManagers() {
		m.Publish(e.ID, triggers.Identity{Tenant: e.Tenant}, body)
	}
	a.logger.Info("a tenant reached a share of its task quota", zap.String("identity", gateway.LogHash(e.Tenant, "")),
		zap.Int("percent", e.Percent), zap.Int64("tasks", e.Tasks), zap.String("quota", e.Quota.String()))
	go a.emit(eventUsageThreshold, func() map[string]any { return data })
}

// withUsageTickets gives an MCP request a place for its reservations.
func withUsageTickets(r *http.Request) *http.Request {
	return r.WithContext(usage.WithTickets(r.Context()))
}

// usageTriggerObserver is the delivery loop's observer: the metrics, and
// each delivered event counted for its user by the newest config's meter.
type usageTriggerObserver struct {
	metrics.TriggerObserver
	app *atomic.Pointer[App]
}

func (o usageTriggerObserver) Delivered(id triggers.Identity) {
	if a := o.app.Load(); a != nil && a.meter != nil {
		a.meter.TriggerDelivered(context.Background(), gateway.Identity{Tenant: id.Tenant, User: id.User})
	}
}

// usageStatus is the usage section of GET /zapier/status.
func (a *App) usageStatus(ctx context.Context) *usage.Status {
	if a.meter == nil {
		return nil
	}
	st := a.meter.Status(ctx, a.meter.backend)
	return &st
}

// parseUsage reads the usage and quota options:
//
//	usage off
//	usage {
//		retention        400d
//		action_run_tasks 1
//		mcp_call_tasks   2
//	}
//	quota {
//		tasks  <n>/<period>
//		tenant <id> <n>/<period>
//	}
func (a *App) parseUsage(d *caddyfile.Dispenser) error {
	if d.Val() == "quota" {
		return a.parseQuota(d)
	}
	if a.Usage == nil {
		a.Usage = new(UsageConfig)
	}
	c := a.Usage
	if d.NextArg() {
		if d.Val() != "off" || d.NextArg() {
			return d.Errf("usage: unexpected %q (want off, or a block)", d.Val())
		}
		c.Off = true
		return nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if !d.NextArg() {
			return d.ArgErr()
		}
		val := d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		switch opt {
		case "retention":
			dur, err := caddy.ParseDuration(val)
			if err != nil || dur < time.Hour {
				return d.Errf("usage retention: %q is not a duration of at least 1h", val)
			}
			c.Retention = caddy.Duration(dur)
		case "action_run_tasks", "mcp_call_tasks":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				return d.Errf("usage %s: %q is not a non-negative integer", opt, val)
			}
			if opt == "action_run_tasks" {
				c.ActionRunTasks = &n
			} else {
				c.MCPCallTasks = &n
			}
		default:
			return d.Errf("usage: unknown option %q (retention, action_run_tasks, mcp_call_tasks)", opt)
		}
	}
	return nil
}

func (a *App) parseQuota(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	if a.Quota == nil {
		a.Quota = new(QuotaConfig)
	}
	q := a.Quota
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "tasks":
			var val string
			if err := oneString(d, &val); err != nil {
				return err
			}
			if _, err := usage.ParseLimit(val, caddy.ParseDuration); err != nil {
				return d.Errf("quota tasks: %v", err)
			}
			q.Tasks = val
		case "tenant":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("quota tenant: want <tenant id> <tasks>/<period>")
			}
			if _, err := usage.ParseLimit(args[1], caddy.ParseDuration); err != nil {
				return d.Errf("quota tenant %s: %v", args[0], err)
			}
			if q.Tenants == nil {
				q.Tenants = map[string]string{}
			}
			q.Tenants[args[0]] = args[1]
		default:
			return d.Errf("quota: unknown option %q (tasks, tenant)", opt)
		}
	}
	return nil
}

// usageAdmin serves POST /zapier/usage on Caddy's admin endpoint: the
// export of one tenant's (or user's) usage. The identity travels in the
// JSON body, never in the query (Caddy's admin log writes the URI).
type usageAdmin struct{ adminAPI }

// CaddyModule returns the Caddy module information.
func (usageAdmin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.zapier_usage",
		New: func() caddy.Module { return new(usageAdmin) },
	}
}

// Routes returns the admin route.
func (u *usageAdmin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/zapier/usage", Handler: caddy.AdminHandlerFunc(u.handleUsage)}}
}

func (u *usageAdmin) handleUsage(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return methodNotAllowed(r, http.MethodPost)
	}
	app, err := u.app()
	if err != nil {
		return err
	}
	var q usage.Query
	if _, err := decodeAdminIdentity(r, &q); err != nil {
		return err
	}
	if app.meter == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("usage counting is off (usage off)")}
	}
	rep, err := app.meter.Export(r.Context(), q)
	if err != nil {
		var ge *gateway.Error
		if errors.As(err, &ge) {
			return caddy.APIError{HTTPStatus: ge.Status, Err: errors.New(ge.Message)}
		}
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: fmt.Errorf("reading usage: %w", err)}
	}
	return writeJSON(w, http.StatusOK, rep)
}

// usageCommand is `caddy zapier usage`.
func usageCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "usage --tenant <tenant> [--user <user>] [--since <RFC 3339>] [--until <RFC 3339>] [--by hour|day|month] [--format json|csv]",
		Short: "Exports a tenant's (or a user's) usage in Zapier's units",
		Long: `Exports what a tenant (or, with --user, one of its users) spent: tasks in
Zapier's unit, action runs and MCP tool calls by outcome, trigger events
delivered and API calls, over --since..--until (default: everything retained),
in one total or by hour, day or month (UTC). --format csv writes a row per
bucket (or one for the whole range) to bill from.`,
		Args: cobra.NoArgs,
		RunE: caddycmd.WrapCommandFuncForCobra(cmdZapierUsage),
	}
	f := c.Flags()
	f.String("tenant", "", "Tenant id (required)")
	f.String("user", "", "Only this user")
	f.String("since", "", "Start (RFC 3339), widened to the hour")
	f.String("until", "", "End (RFC 3339), widened to the hour")
	f.String("by", "", "Buckets: hour, day or month (default: one total)")
	f.String("format", "json", "json or csv")
	return c
}

func cmdZapierUsage(fl caddycmd.Flags) (int, error) {
	q := usage.Query{Tenant: fl.String("tenant"), User: fl.String("user"), Since: fl.String("since"), Until: fl.String("until"), By: fl.String("by")}
	if q.Tenant == "" {
		return caddy.ExitCodeFailedStartup, errors.New("give --tenant (and --user for one user's usage)")
	}
	format := fl.String("format")
	if format != "json" && format != "csv" {
		return caddy.ExitCodeFailedStartup, errors.New("--format must be json or csv")
	}
	body, err := callZapierAdminJSON(fl, http.MethodPost, "/zapier/usage", q)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if format == "json" {
		_, err = os.Stdout.Write(append(body, '\n'))
		return caddy.ExitCodeSuccess, err
	}
	var rep usage.Report
	if err := json.Unmarshal(body, &rep); err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("decoding the usage: %w", err)
	}
	if err := usage.WriteCSV(os.Stdout, rep); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	return caddy.ExitCodeSuccess, nil
}

// Interface guards.
var (
	_ caddy.AdminRouter         = (*usageAdmin)(nil)
	_ triggers.DeliveryObserver = usageTriggerObserver{}
	_ gateway.UserStore         = (*usage.Meter)(nil)
)
