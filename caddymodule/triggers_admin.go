package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/metrics"
	"github.com/zapgate/caddy-zapier/triggers"
)

func init() {
	caddy.RegisterModule(triggersAdminAPI{})
}

// triggersAdminAPI serves the dead letters of zapier_triggers on Caddy's
// admin endpoint:
//
//	GET  /zapier/deliveries              the dead letters (events the partner never accepted)
//	POST /zapier/deliveries/replay?id=…  deliver one again, same webhook-id and body; deleted on a 2xx
type triggersAdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (triggersAdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.zapier_triggers",
		New: func() caddy.Module { return new(triggersAdminAPI) },
	}
}

// Provision registers the events metrics: admin modules are provisioned on
// every config load, so the series exist whatever the config.
func (triggersAdminAPI) Provision(ctx caddy.Context) error {
	return metrics.RegisterTriggers(ctx.GetMetricsRegistry())
}

// Routes returns the admin routes.
func (triggersAdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/zapier/deliveries", Handler: caddy.AdminHandlerFunc(handleDeadLetters)},
		{Pattern: "/zapier/deliveries/replay", Handler: caddy.AdminHandlerFunc(handleReplay)},
	}
}

func handleDeadLetters(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return methodNotAllowed(r, http.MethodGet)
	}
	mgrs := deliveryManagers()
	if len(mgrs) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("no zapier_triggers handler is configured")}
	}
	out, err := triggers.AllDeadLetters(r.Context(), mgrs)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(struct {
		DeadLetters []triggers.DeadLetter `json:"dead_letters"`
	}{out})
}

func handleReplay(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return methodNotAllowed(r, http.MethodPost)
	}
	id := r.URL.Query().Get("id")
	if id == "" {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: errors.New("give the dead letter's id: ?id=<message id>")}
	}
	switch err := triggers.ReplayAny(r.Context(), deliveryManagers(), id); {
	case err == nil:
		w.Header().Set("Content-Type", "application/json")
		_, err = w.Write([]byte(`{"replayed":true}` + "\n"))
		return err
	case errors.Is(err, triggers.ErrNotFound):
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("no dead letter with this id")}
	default:
		return caddy.APIError{HTTPStatus: http.StatusBadGateway, Err: fmt.Errorf("replaying: %w", err)}
	}
}

// deliveriesCommand is `caddy zapier deliveries [--replay <id>]`.
func deliveriesCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "deliveries [--replay <id>] [--json]",
		Short: "Lists the trigger events the partner never accepted (dead letters), or replays one",
		Args:  cobra.NoArgs,
		RunE:  caddycmd.WrapCommandFuncForCobra(cmdZapierDeliveries),
	}
	c.Flags().String("replay", "", "Deliver this dead letter again (same webhook-id and body)")
	c.Flags().Bool("json", false, "Print the admin API's JSON as is")
	return c
}

func cmdZapierDeliveries(fl caddycmd.Flags) (int, error) {
	if id := fl.String("replay"); id != "" {
		if _, err := callZapierAdmin(fl, http.MethodPost, "/zapier/deliveries/replay?id="+url.QueryEscape(id)); err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
		fmt.Println("Delivered; the dead letter is gone.")
		return caddy.ExitCodeSuccess, nil
	}
	body, err := callZapierAdmin(fl, http.MethodGet, "/zapier/deliveries")
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if fl.Bool("json") {
		fmt.Print(string(body))
		return caddy.ExitCodeSuccess, nil
	}
	var res struct {
		DeadLetters []triggers.DeadLetter `json:"dead_letters"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("decoding the dead letters: %w", err)
	}
	if len(res.DeadLetters) == 0 {
		fmt.Println("No dead letters.")
	}
	for _, dl := range res.DeadLetters {
		fmt.Printf("%s  %s  subscription %s  identity %s  %d attempts: %s\n", dl.Created.Format(time.RFC3339), dl.ID,
			dl.Subscription, gateway.LogHash(dl.Tenant, dl.User), dl.Attempts, dl.LastError)
	}
	return caddy.ExitCodeSuccess, nil
}

// Interface guards.
var (
	_ caddy.AdminRouter = triggersAdminAPI{}
	_ caddy.Provisioner = triggersAdminAPI{}
)
