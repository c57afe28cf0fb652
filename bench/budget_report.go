package main

// The budget section's arithmetic (ideal rate, expected polls, Jain's index,
// histogram quantiles, goals) and its reports: budget.json, budget.md and
// budget.svg. Nothing here does I/O except write; budget_test.go covers it.

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// budgetResults is what budget.json holds.
type budgetResults struct {
	Env    envInfo      `json:"env"`
	Config budgetConfig `json:"config"`
	Modes  []budgetMode `json:"modes"`
}

// budgetConfig is the section's setup, in Zapier time (the documented
// minute) unless a field says "scaled".
type budgetConfig struct {
	Factor          float64   `json:"factor"`           // Zapier's window and cooldown divided by this
	WindowScaledMS  float64   `json:"window_scaled_ms"` // one Zapier minute on this run's clock
	PerIP           int       `json:"per_ip"`           // per window, the fake's and the gateway's
	Partner         int       `json:"partner"`          // per window, the fake's and the gateway's
	GatewayPerIP    int       `json:"gateway_per_ip"`   // the gateway's api_budget per_ip
	GatewayPartner  int       `json:"gateway_partner"`
	MaxWaitScaledMS float64   `json:"max_wait_scaled_ms"`
	APILatencyMS    float64   `json:"api_latency_ms"` // real, added to every /v2 answer
	DelayScaledMS   float64   `json:"action_delay_scaled_ms"`
	WaitScaledMS    float64   `json:"run_wait_scaled_ms"` // the wait of every POST run
	PollScaledMS    []float64 `json:"poll_interval_scaled_ms"`
	CallbackTimeout float64   `json:"callback_timeout_scaled_ms"`
	Users           int       `json:"users"`
	Tenants         int       `json:"tenants"`
	Weights         []int     `json:"tenant_weights"`
	Windows         int       `json:"measured_windows"` // per level, after one warm-up window
	Loads           []float64 `json:"loads"`
	Arrivals        string    `json:"arrivals"`
	IdentityLimit   int       `json:"rate_limit_identity,omitempty"` // per window; 0: off (or not set, before it existed)
	TenantLimit     int       `json:"rate_limit_tenant,omitempty"`
	WaitSource      string    `json:"queue_wait_source"`
}

// budgetMode is one gateway configuration (with or without callbacks).
type budgetMode struct {
	Name          string        `json:"name"`
	Callbacks     bool          `json:"callbacks"`
	ExpectedPolls int           `json:"expected_polls"` // per run at no load, from the poll schedule
	CallsPerRun   float64       `json:"ideal_calls_per_run"`
	IdealPerMin   float64       `json:"ideal_runs_per_min"`     // budget ÷ calls per run
	ConnectCalls  int           `json:"connect_v2_calls"`       // /v2 calls the 50 connect flows cost
	WarmupCalls   int           `json:"warmup_calls,omitempty"` // stored: the calls of one run per user, which created the stored actions
	Levels        []budgetLevel `json:"levels"`
	// Env is set on a mode kept from an earlier run (-budget-keep): the
	// run that measured it, when not the one in the header.
	Env *envInfo `json:"env,omitempty"`
}

// budgetLevel is one offered load.
type budgetLevel struct {
	Load          float64 `json:"load"`            // × the ideal run rate
	OfferedPerMin float64 `json:"offered_per_min"` // arrivals in the measured windows, per Zapier minute
	Requests      int     `json:"requests"`        // every POST run sent, warm-up included
	Measured      int     `json:"measured"`        // sent in the measured windows

	// Answers to every request of the level.
	OK             int            `json:"status_200"`
	Accepted       int            `json:"status_202"`
	Shed           int            `json:"status_503_retry_after"`
	ShedNoRetry    int            `json:"status_503_without_retry_after"`
	OtherStatus    map[string]int `json:"other_status,omitempty"` // "status code" → count
	ClientErrors   int            `json:"client_errors"`          // no answer (transport error, timeout)
	RunErrors      int            `json:"runs_ended_in_error"`    // 200 with status error
	RetryAfterMaxS int            `json:"retry_after_max_s"`

	// Completed runs (200 success) among the requests sent in the measured
	// windows, in total and per tenant; per Zapier minute.
	Completed       int     `json:"completed"`
	CompletedPerMin float64 `json:"completed_per_min"`
	Ratio           float64 `json:"completed_vs_ideal"`
	TenantOffered   []int   `json:"tenant_offered"`
	TenantCompleted []int   `json:"tenant_completed"`
	Jain            float64 `json:"jain"`

	// The level's /v2 calls per tenant (from the fake's request log): all,
	// fresh action-id lookups, run creations, polls; Jain's index over all.
	TenantCalls   []int   `json:"tenant_v2_calls"`
	TenantLookups []int   `json:"tenant_lookups"`
	TenantCreates []int   `json:"tenant_creates"`
	TenantPolls   []int   `json:"tenant_polls"`
	CallJain      float64 `json:"jain_v2_calls"`
	// The most /v2 calls in any tenth of a window (the budget allows a
	// tenth of per_ip there on average, all of it at once).
	PeakTenthCalls int `json:"peak_v2_calls_in_a_tenth_window"`
	// The most /v2 calls that reached the fake in any one window (the
	// fake's count is taken after its latency; the arrival times are before).
	PeakWindowCalls int      `json:"peak_v2_calls_in_a_window"`
	ThrottledAt     []string `json:"throttled_at,omitempty"`

	// At the fake, over the whole level.
	Throttled     int            `json:"throttled_429"`
	V2Calls       int            `json:"v2_calls"`
	CallsByRoute  map[string]int `json:"v2_calls_by_route"`
	CompletedAll  int            `json:"completed_all"` // 200 success over the whole level
	CallsPerRun   float64        `json:"v2_calls_per_completed_run"`
	RunsCreated   int            `json:"runs_created"`
	RunsAnswered  int            `json:"runs_answered"`  // distinct run ids in 200/202 answers
	DuplicateRuns int            `json:"duplicate_runs"` // run ids answered more than once
	UnknownRuns   int            `json:"unknown_runs"`   // answered ids the fake did not create in this level
	Callbacks     int            `json:"callbacks_delivered"`

	// The gateway's queue wait (caddy_zapier_budget_wait_seconds, granted
	// requests) and what it shed (caddy_zapier_budget_shed_total).
	WaitCount    int            `json:"wait_observations"`
	WaitP99MS    float64        `json:"wait_p99_ms"`
	WaitP99Le    string         `json:"wait_p99_bucket"`
	WaitMaxLe    string         `json:"wait_max_bucket"`
	BudgetShed   map[string]int `json:"budget_shed"`
	LatencyP50MS float64        `json:"latency_200_p50_ms"`
	LatencyP99MS float64        `json:"latency_200_p99_ms"`

	Goals []budgetGoal `json:"goals"`
}

type budgetGoal struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

// jain is Jain's fairness index of xs: (Σx)² / (n·Σx²), 1 when all are
// equal, 1/n when one has everything; 0 for no values or all zero.
func jain(xs []float64) float64 {
	var sum, sq float64
	for _, x := range xs {
		sum += x
		sq += x * x
	}
	if len(xs) == 0 || sq == 0 {
		return 0
	}
	return sum * sum / (float64(len(xs)) * sq)
}

// idealRunsPerMin is the most runs a budget of perWindow calls per window
// (one Zapier minute) allows when each run costs callsPerRun calls.
func idealRunsPerMin(perIP, partner int, callsPerRun float64) float64 {
	limit := perIP
	if partner > 0 && (limit <= 0 || partner < limit) {
		limit = partner
	}
	if callsPerRun <= 0 || limit <= 0 {
		return 0
	}
	return float64(limit) / callsPerRun
}

// expectedPolls is how many polls zapier_actions makes for a run that ends
// delay after its creation, with no budget pressure: it waits interval,
// polls, doubles the pause up to maxInterval, and so on; every poll takes
// latency before Zapier looks at the run (and as long again is not
// counted: the answer is immediate after the fake's delay).
func expectedPolls(delay, interval, maxInterval, latency time.Duration) int {
	if interval <= 0 {
		return 0
	}
	var t time.Duration // when the next poll is sent, from the create answer
	pause := interval
	for n := 1; n < 10000; n++ {
		t += pause
		if t+latency >= delay {
			return n
		}
		t += latency
		pause = min(2*pause, maxInterval)
	}
	return 10000
}

// histQuantile is Prometheus's histogram_quantile over cumulative bucket
// counts (upper bounds ascending, the last +Inf): linear interpolation in
// the bucket the rank falls in. It returns the quantile, the bucket's upper
// bound as text, and false when there are no observations. A rank in the
// +Inf bucket returns the highest finite bound.
func histQuantile(q float64, les []float64, cum []float64) (float64, string, bool) {
	if len(les) == 0 || len(les) != len(cum) || cum[len(cum)-1] <= 0 {
		return 0, "", false
	}
	total := cum[len(cum)-1]
	rank := q * total
	for i, c := range cum {
		if c < rank {
			continue
		}
		if math.IsInf(les[i], 1) {
			if i == 0 {
				return 0, "+Inf", true
			}
			return les[i-1], "+Inf", true
		}
		lo, below := 0.0, 0.0
		if i > 0 {
			lo, below = les[i-1], cum[i-1]
		}
		if les[i] <= 0 || c == below {
			return les[i], fmtLe(les[i]), true
		}
		return lo + (les[i]-lo)*(rank-below)/(c-below), fmtLe(les[i]), true
	}
	return les[len(les)-1], fmtLe(les[len(les)-1]), true
}

// histMaxBucket is the upper bound of the highest bucket with observations.
func histMaxBucket(les []float64, cum []float64) string {
	for i := len(cum) - 1; i > 0; i-- {
		if cum[i] > cum[i-1] {
			return fmtLe(les[i])
		}
	}
	if len(cum) > 0 && cum[0] > 0 {
		return fmtLe(les[0])
	}
	return ""
}

func fmtLe(le float64) string {
	if math.IsInf(le, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(le*1000, 'f', -1, 64) + " ms"
}

// quantileOf is the q-quantile of xs (nearest rank); 0 when empty.
func quantileOf(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// evaluate sets the level's goals. maxLoad is the highest load of the run:
// fairness is judged there (at 5×, where every tenant asks for more than
// its equal share).
func (l *budgetLevel) evaluate(m *budgetMode, maxWait time.Duration, maxLoad float64) {
	var g []budgetGoal
	g = append(g, budgetGoal{"429s drawn from Zapier", "0", strconv.Itoa(l.Throttled), l.Throttled == 0})

	want := math.Min(l.OfferedPerMin, m.IdealPerMin)
	g = append(g, budgetGoal{"completed runs/min", fmt.Sprintf("≥ 0.9 × %.1f (min of offered, ideal)", want),
		fmt.Sprintf("%.1f (%.2f× ideal, %.2f× offered)", l.CompletedPerMin, l.Ratio, ratio(l.CompletedPerMin, l.OfferedPerMin)),
		l.CompletedPerMin >= 0.9*want})

	callsTarget := m.CallsPerRun
	g = append(g, budgetGoal{"Zapier calls per completed run", fmt.Sprintf("≤ %g", callsTarget),
		fmt.Sprintf("%.2f", l.CallsPerRun), l.CompletedAll > 0 && l.CallsPerRun <= callsTarget+0.005})

	if l.Load >= maxLoad && maxLoad > 1 {
		g = append(g, budgetGoal{"Jain's fairness over tenants", "≥ 0.95",
			fmt.Sprintf("%.3f (completed %v)", l.Jain, l.TenantCompleted), l.Jain >= 0.95})
	}

	g = append(g, budgetGoal{"p99 queue wait", "≤ max_wait " + maxWait.String(),
		fmt.Sprintf("%.0f ms (bucket ≤ %s; max bucket %s; %d waits)", l.WaitP99MS, l.WaitP99Le, l.WaitMaxLe, l.WaitCount),
		l.WaitCount == 0 || l.WaitP99MS <= float64(maxWait)/float64(time.Millisecond)})

	other := 0
	for _, n := range l.OtherStatus {
		other += n
	}
	answered := l.ClientErrors == 0 && other == 0 && l.ShedNoRetry == 0 && l.OK+l.Accepted+l.Shed == l.Requests
	g = append(g, budgetGoal{"every request answered 200/202/503+Retry-After", "all",
		fmt.Sprintf("%d/%d (%d client errors, %d other, %d 503 without Retry-After)",
			l.OK+l.Accepted+l.Shed, l.Requests, l.ClientErrors, other, l.ShedNoRetry), answered})

	g = append(g, budgetGoal{"runs created at Zapier = runs answered", "equal, no duplicates",
		fmt.Sprintf("%d created, %d answered, %d duplicate, %d unknown", l.RunsCreated, l.RunsAnswered, l.DuplicateRuns, l.UnknownRuns),
		l.RunsCreated == l.RunsAnswered && l.DuplicateRuns == 0 && l.UnknownRuns == 0})
	l.Goals = g
}

func (l *budgetLevel) goalsMet() (met, total int) {
	for _, g := range l.Goals {
		total++
		if g.Met {
			met++
		}
	}
	return met, total
}

func (r *budgetResults) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	for name, content := range map[string][]byte{
		"budget.json": append(data, '\n'),
		"budget.md":   []byte(r.markdown()),
		"budget.svg":  []byte(r.svg()),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func rerenderBudget(jsonPath, keep, dir string) error {
	r, err := readBudget(jsonPath)
	if err != nil {
		return err
	}
	if keep != "" {
		if err := r.keepModes(keep); err != nil {
			return err
		}
	}
	return r.write(dir)
}

func readBudget(path string) (*budgetResults, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r budgetResults
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// keepModes adds the modes of an earlier run's budget.json (path) that r
// did not measure, each marked with the run that measured it, so a run of
// one mode does not drop the other's results. The setups must match.
func (r *budgetResults) keepModes(path string) error {
	old, err := readBudget(path)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(old.Config, r.Config) {
		return fmt.Errorf("-budget-keep %s: its setup differs from this run's; measure every mode instead", path)
	}
	have := map[string]bool{}
	for _, m := range r.Modes {
		have[m.Name] = true
	}
	for _, m := range old.Modes {
		if have[m.Name] {
			continue
		}
		if m.Env == nil {
			env := old.Env
			m.Env = &env
		}
		r.Modes = append(r.Modes, m)
	}
	// Callbacks, polling, stored: the order a run of every mode writes them.
	order := map[string]int{"callbacks": 0, "polling": 1, "stored": 2}
	sort.SliceStable(r.Modes, func(i, j int) bool { return order[r.Modes[i].Name] < order[r.Modes[j].Name] })
	return nil
}

func yes(met bool) string {
	if met {
		return "met"
	}
	return "**missed**"
}

func (r *budgetResults) markdown() string {
	c := r.Config
	var b strings.Builder
	fmt.Fprintf(&b, "# Request budget under load (`POST run`)\n\n")
	fmt.Fprintf(&b, "%s · %s · %s · Caddy %s · Go %s · tree %s · load average %s → %s\n\n",
		r.Env.Date, r.Env.Machine, r.Env.OS, r.Env.Caddy, r.Env.Go, r.Env.Tree, r.Env.LoadStart, r.Env.LoadEnd)
	fmt.Fprintf(&b, "The fake Zapier enforces the documented limits (%d/IP, %d/partner per minute, 60 s cooldown after a 429) "+
		"with time scaled by %g (one Zapier minute = %.0f ms here), %.0f ms latency on every `/v2` answer and a %.0f ms "+
		"action (10 s at Zapier's pace). The gateway (the real Caddy binary) runs with `api_budget { per_ip %d/%s partner %d/%s max_wait %s }`. "+
		"%s%d users in %d tenants (weights %v, round robin over each tenant's users), each with a connection stored by the redirect "+
		"Connect flow, send `POST run` with `wait` %s as %s arrivals at each offered load (× the ideal run rate); "+
		"one warm-up window, then %d measured windows. All rates below are per Zapier minute (per %.0f ms window here).\n\n",
		c.PerIP, c.Partner, c.Factor, c.WindowScaledMS, c.APILatencyMS, c.DelayScaledMS,
		c.GatewayPerIP, msDur(c.WindowScaledMS), c.GatewayPartner, msDur(c.WindowScaledMS), msDur(c.MaxWaitScaledMS),
		rateLimitNote(c), c.Users, c.Tenants, c.Weights, msDur(c.WaitScaledMS), c.Arrivals, c.Windows, c.WindowScaledMS)
	fmt.Fprintf(&b, "Ideal = budget ÷ Zapier calls per run; the binding limit is per_ip (%d). Queue wait: %s.\n\n", min(c.PerIP, c.Partner), c.WaitSource)

	for _, m := range r.Modes {
		fmt.Fprintf(&b, "## %s\n\n", modeTitle(m))
		if m.Env != nil {
			fmt.Fprintf(&b, "*Kept from an earlier run with the same setup (-budget-keep), not measured with the header's tree: "+
				"%s · tree %s · load average %s → %s.*\n\n", m.Env.Date, m.Env.Tree, m.Env.LoadStart, m.Env.LoadEnd)
		}
		fmt.Fprintf(&b, "Ideal: %d ÷ %g calls per run = **%.1f runs/min**. The 50 connect flows before the levels cost %d `/v2` calls.",
			min(c.PerIP, c.Partner), m.CallsPerRun, m.IdealPerMin, m.ConnectCalls)
		if m.WarmupCalls > 0 {
			fmt.Fprintf(&b, " One run per user before the levels created the stored actions (%d calls: each user's listing for the action's type, create and run).", m.WarmupCalls)
		}
		b.WriteString("\n\n")
		b.WriteString("| load | offered/min | completed/min | vs ideal | 429s | calls/run | Jain | p99 queue wait | 200 / 202 / 503 | lost | created = answered | goals |\n")
		b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
		for _, l := range m.Levels {
			met, total := l.goalsMet()
			var missed []string
			for _, g := range l.Goals {
				if !g.Met {
					missed = append(missed, g.Name)
				}
			}
			verdict := fmt.Sprintf("%d/%d met", met, total)
			if len(missed) > 0 {
				verdict += "; **missed**: " + strings.Join(missed, ", ")
			}
			lost := l.ClientErrors + l.ShedNoRetry
			for _, n := range l.OtherStatus {
				lost += n
			}
			fmt.Fprintf(&b, "| %g× | %.1f | %.1f | %.2f | %d | %.2f | %.3f | %.0f ms | %d / %d / %d | %d | %d = %d%s | %s |\n",
				l.Load, l.OfferedPerMin, l.CompletedPerMin, l.Ratio, l.Throttled, l.CallsPerRun, l.Jain, l.WaitP99MS,
				l.OK, l.Accepted, l.Shed, lost, l.RunsCreated, l.RunsAnswered, dupNote(l), verdict)
		}
		b.WriteString("\n<details><summary>Goals per level</summary>\n\n| load | goal | target | measured | |\n|---:|---|---|---|---|\n")
		for _, l := range m.Levels {
			for _, g := range l.Goals {
				fmt.Fprintf(&b, "| %g× | %s | %s | %s | %s |\n", l.Load, g.Name, g.Target, g.Measured, yes(g.Met))
			}
		}
		b.WriteString("\n| load | /v2 calls by route | budget shed | tenants offered → completed | per tenant: /v2 calls (Jain) · lookups · creates · polls | most /v2 calls in a tenth of a window / in a window | 200 latency p50 / p99 | max Retry-After |\n|---:|---|---|---|---|---:|---|---:|\n")
		for _, l := range m.Levels {
			fmt.Fprintf(&b, "| %g× | %s | %s | %v → %v | %v (%.3f) · %v · %v · %v | %d / %d | %.0f / %.0f ms | %d s |\n", l.Load, fmtCounts(l.CallsByRoute), fmtCounts(l.BudgetShed),
				l.TenantOffered, l.TenantCompleted, l.TenantCalls, l.CallJain, l.TenantLookups, l.TenantCreates, l.TenantPolls,
				l.PeakTenthCalls, l.PeakWindowCalls, l.LatencyP50MS, l.LatencyP99MS, l.RetryAfterMaxS)
		}
		for _, l := range m.Levels {
			for _, t := range l.ThrottledAt {
				fmt.Fprintf(&b, "\n429 at %g×: %s", l.Load, t)
			}
		}
		b.WriteString("\n</details>\n\n")
	}
	b.WriteString("## Completed runs per minute vs offered load\n\n![chart](budget.svg)\n\n```\n")
	b.WriteString(r.ascii())
	b.WriteString("```\n")
	return b.String()
}

func rateLimitNote(c budgetConfig) string {
	if c.IdentityLimit == 0 && c.TenantLimit == 0 {
		return ""
	}
	lim := func(n int) string {
		if n <= 0 {
			return "off"
		}
		return fmt.Sprintf("%d %s", n, msDur(c.WindowScaledMS))
	}
	return fmt.Sprintf("Its end-user `rate_limit` is scaled alike (identity %s, tenant %s). ", lim(c.IdentityLimit), lim(c.TenantLimit))
}

func dupNote(l budgetLevel) string {
	if l.DuplicateRuns == 0 && l.UnknownRuns == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d dup, %d unknown)", l.DuplicateRuns, l.UnknownRuns)
}

func modeTitle(m budgetMode) string {
	if m.Name == "stored" {
		return "Through stored actions, with run callbacks (`run_via stored`: one call per run once each user's stored action exists)"
	}
	if m.Callbacks {
		return "With run callbacks (HTTPS `run_callback_url`)"
	}
	return fmt.Sprintf("Without callbacks (polling; %d polls per run at no load)", m.ExpectedPolls)
}

func msDur(ms float64) string { return time.Duration(ms * float64(time.Millisecond)).String() }

func fmtCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v != 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", strings.Replace(strings.TrimPrefix(k, "/v2/"), "/actions/v1/", "", 1), m[k])
	}
	if len(parts) == 0 {
		return "—"
	}
	return strings.Join(parts, ", ")
}

// ascii is a bar chart: completed runs/min per load and mode, with the
// ideal marked.
func (r *budgetResults) ascii() string {
	top := 0.0
	for _, m := range r.Modes {
		top = math.Max(top, m.IdealPerMin)
		for _, l := range m.Levels {
			top = math.Max(top, math.Max(l.CompletedPerMin, math.Min(l.OfferedPerMin, 1.2*m.IdealPerMin)))
		}
	}
	const width = 50
	scale := func(v float64) int {
		if top <= 0 {
			return 0
		}
		return int(math.Round(v / top * width))
	}
	var b strings.Builder
	for _, m := range r.Modes {
		name := m.Name
		fmt.Fprintf(&b, "%s (ideal %.1f runs/min = '|')\n", name, m.IdealPerMin)
		for _, l := range m.Levels {
			bar := []rune(strings.Repeat("█", scale(l.CompletedPerMin)) + strings.Repeat(" ", width+1-scale(l.CompletedPerMin)))
			if i := scale(m.IdealPerMin); i >= 0 && i < len(bar) {
				if bar[i] == '█' {
					bar[i] = '▌'
				} else {
					bar[i] = '|'
				}
			}
			fmt.Fprintf(&b, "  %4g× %s %5.1f/min (offered %.1f)\n", l.Load, string(bar), l.CompletedPerMin, l.OfferedPerMin)
		}
	}
	return b.String()
}

// svg plots completed runs/min against offered load (log scale), one line
// per mode, with each mode's ideal dashed and offered = completed dotted.
func (r *budgetResults) svg() string {
	const w, h, left, right, top, bottom = 640.0, 380.0, 60.0, 170.0, 30.0, 50.0
	pw, ph := w-left-right, h-top-bottom
	maxY, minX, maxX := 0.0, math.Inf(1), math.Inf(-1)
	for _, m := range r.Modes {
		maxY = math.Max(maxY, m.IdealPerMin)
		for _, l := range m.Levels {
			maxY = math.Max(maxY, l.CompletedPerMin)
			minX, maxX = math.Min(minX, l.Load), math.Max(maxX, l.Load)
		}
	}
	if maxY <= 0 || math.IsInf(minX, 0) {
		return `<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>`
	}
	maxY = math.Ceil(maxY*1.15/5) * 5
	if minX == maxX {
		minX, maxX = minX/2, maxX*2
	}
	lx0, lx1 := math.Log(minX), math.Log(maxX)
	x := func(load float64) float64 { return left + (math.Log(load)-lx0)/(lx1-lx0)*pw }
	y := func(v float64) float64 { return top + ph - v/maxY*ph }
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd"}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="%.0f" height="%.0f" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%.0f" y="18" font-size="14">Completed POST run per Zapier minute vs offered load</text>`+"\n", left)
	for i := 0; i <= 5; i++ {
		v := maxY * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.1f" y="%.1f" text-anchor="end">%.0f</text>`+"\n",
			left, y(v), left+pw, y(v), left-6, y(v)+4, v)
	}
	var loads []float64
	if len(r.Modes) > 0 {
		for _, l := range r.Modes[0].Levels {
			loads = append(loads, l.Load)
		}
	}
	for _, load := range loads {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.1f" y="%.1f" text-anchor="middle">%g×</text>`+"\n",
			x(load), top, x(load), top+ph, x(load), top+ph+18, load)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">offered load (× ideal run rate, log scale)</text>`+"\n", left+pw/2, h-8)
	fmt.Fprintf(&b, `<text x="14" y="%.1f" transform="rotate(-90 14 %.1f)" text-anchor="middle">runs / min</text>`+"\n", top+ph/2, top+ph/2)
	for i, m := range r.Modes {
		col := colors[i%len(colors)]
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="6 4"/>`+"\n",
			left, y(m.IdealPerMin), left+pw, y(m.IdealPerMin), col)
		var pts, offered []string
		for _, l := range m.Levels {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(l.Load), y(l.CompletedPerMin)))
			offered = append(offered, fmt.Sprintf("%.1f,%.1f", x(l.Load), y(math.Min(l.OfferedPerMin, maxY))))
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-dasharray="1 3"/>`+"\n", strings.Join(offered, " "), col)
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), col)
		for _, l := range m.Levels {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`+"\n", x(l.Load), y(l.CompletedPerMin), col)
		}
		name := m.Name
		ly := top + 20 + float64(i)*52
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/><text x="%.1f" y="%.1f">%s completed</text>`+"\n",
			left+pw+12, ly, left+pw+32, ly, col, left+pw+38, ly+4, name)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="6 4"/><text x="%.1f" y="%.1f">ideal %.1f/min</text>`+"\n",
			left+pw+12, ly+16, left+pw+32, ly+16, col, left+pw+38, ly+20, m.IdealPerMin)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="1 3"/><text x="%.1f" y="%.1f">offered</text>`+"\n",
			left+pw+12, ly+32, left+pw+32, ly+32, col, left+pw+38, ly+36)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
