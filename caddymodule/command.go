package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "zapier",
		Usage: "status|rotate|keys revoke|purge|forget|deliveries|webhooks|usage [--address <admin>] [--config <path> [--adapter <name>]]",
		Short: "Shows and operates the zapier app of a running Caddy",
		Long: `
Calls the zapier routes of a running Caddy's admin API:

  caddy zapier status                        signing keys, token cache and breaker state
  caddy zapier rotate [--immediate]          publish a next signing key (or make one sign now)
  caddy zapier keys revoke <kid>             remove a leaked key from the JWKS now, purge every token
  caddy zapier purge [--tenant T --user U]   drop one identity's access token, or all of them
  caddy zapier forget --tenant T [--user U] [--keep-upstream]
                                             offboard a user or a tenant: connections (at Zapier too),
                                             tokens on every gateway, pending flows and runs
  caddy zapier deliveries [--replay ID]      trigger events the partner never accepted; replay one
  caddy zapier webhooks register|list|test|delete   connection-webhook registrations at Zapier
  caddy zapier usage --tenant T [--user U] [--since …] [--until …] [--by hour|day|month] [--format json|csv]
                                             a tenant's usage in Zapier's units, to bill from

The admin address is --address, else the one in --config, else ` + caddy.DefaultAdminListen + `.
No command ever prints a token. The exit status is non-zero when the call failed.`,
		CobraFunc: func(cmd *cobra.Command) {
			pf := cmd.PersistentFlags()
			pf.String("address", "", "Address of the admin API (default: from --config, else "+caddy.DefaultAdminListen+")")
			pf.StringP("config", "c", "", "Configuration file to read the admin address from")
			pf.StringP("adapter", "a", "", "Name of the config adapter (with --config)")

			status := &cobra.Command{
				Use:   "status [--json]",
				Short: "Shows the signing keys, the token cache and the breaker",
				Args:  cobra.NoArgs,
				RunE:  caddycmd.WrapCommandFuncForCobra(cmdZapierStatus),
			}
			status.Flags().Bool("json", false, "Print the admin API's JSON as is")

			rotate := &cobra.Command{
				Use:   "rotate [--immediate]",
				Short: "Publishes a next signing key, which signs after key_overlap",
				Long: `Publishes a next signing key, which signs after key_overlap; while one is
pending, rotate returns it and changes nothing. With --immediate the next key
(or a new one) signs at once and the old one stays published for key_overlap:
use it when a private key may have leaked.`,
				Args: cobra.NoArgs,
				RunE: caddycmd.WrapCommandFuncForCobra(cmdZapierRotate),
			}
			rotate.Flags().Bool("immediate", false, "Make the new key sign now (key compromise)")

			purge := &cobra.Command{
				Use:   "purge [--tenant <tenant> --user <user>]",
				Short: "Drops cached access tokens: one identity's, or all",
				Args:  cobra.NoArgs,
				RunE:  caddycmd.WrapCommandFuncForCobra(cmdZapierPurge),
			}
			purge.Flags().String("tenant", "", "Tenant id of the identity to purge")
			purge.Flags().String("user", "", "User id of the identity to purge")

			forget := &cobra.Command{
				Use:   "forget --tenant <tenant> [--user <user>] [--keep-upstream]",
				Short: "Offboards a user, or a whole tenant",
				Long: `Offboards a user (or, without --user, every user of the tenant): deletes each
stored connection and its authentication at Zapier (--keep-upstream leaves
those at Zapier), purges the cached access tokens on every gateway sharing the
storage and the Redis tier, and forgets pending connect flows and action runs.
A partial failure is reported and the exit status is non-zero; running the
same command again finishes the job.`,
				Args: cobra.NoArgs,
				RunE: caddycmd.WrapCommandFuncForCobra(cmdZapierForget),
			}
			forget.Flags().String("tenant", "", "Tenant id to offboard (required)")
			forget.Flags().String("user", "", "User id to offboard (default: every user of the tenant)")
			forget.Flags().Bool("keep-upstream", false, "Leave the authentications at Zapier")

			keys := &cobra.Command{Use: "keys", Short: "Operates on signing keys"}
			keys.AddCommand(&cobra.Command{
				Use:   "revoke <kid>",
				Short: "Removes a leaked signing key from the JWKS at once and purges every cached token",
				Long: `Removes the signing key <kid> (see caddy zapier status) from the JWKS at once,
records it as revoked in the shared storage so no gateway publishes it again
(the others drop it within key_sync), makes the pending or a new key sign if
it was signing, and purges every cached access token, the Redis tier's too.`,
				Args: cobra.ExactArgs(1),
				RunE: caddycmd.WrapCommandFuncForCobra(cmdZapierRevoke),
			})

			cmd.AddCommand(status, rotate, keys, purge, forget, deliveriesCommand(), webhooksCommand(), usageCommand()) // triggers_admin.go, triggers_webhooks_cmd.go, usage.go
		},
	})
}

func cmdZapierStatus(fl caddycmd.Flags) (int, error) {
	body, err := callZapierAdmin(fl, http.MethodGet, "/zapier/status")
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if fl.Bool("json") {
		_, err = os.Stdout.Write(append(body, '\n'))
		return caddy.ExitCodeSuccess, err
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("decoding the status: %w", err)
	}
	printStatus(os.Stdout, st)
	return caddy.ExitCodeSuccess, nil
}

// printStatus renders GET /zapier/status for a person.
func printStatus(w io.Writer, st Status) {
	fmt.Fprintln(w, "Signing keys:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  KID\tALG\tSTATE\tACTIVATES\tRETIRES\tDELETED")
	for _, k := range st.Keys {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", k.KID, k.Alg, k.State, when(k.ActivatesAt), when(k.RetiresAt), when(k.DeletesAt))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "Token cache: %d of %d entries, hit ratio %.1f%%\n", st.Cache.Entries, st.Cache.Size, 100*st.Cache.HitRatio)
	if st.Breaker != "" {
		fmt.Fprintf(w, "Breaker: token endpoint %s, API %s\n", st.Breaker, st.APIBreaker)
	}
	if b := st.Budget; b != nil {
		fmt.Fprintf(w, "API budget: per IP %s (%d left), partner %s (%d left, %s, %d sidecars), %d queued, max wait %s\n",
			b.PerIP.Limit, b.PerIP.Remaining, b.Partner.Limit, b.Partner.Remaining, b.PartnerMode, b.Peers, b.Queued, b.MaxWait)
	}
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

func cmdZapierRotate(fl caddycmd.Flags) (int, error) {
	uri := "/zapier/keys/rotate"
	if fl.Bool("immediate") {
		uri += "?immediate=1"
	}
	body, err := callZapierAdmin(fl, http.MethodPost, uri)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	var res struct {
		Next struct {
			KID         string    `json:"kid"`
			Alg         string    `json:"alg"`
			State       string    `json:"state"`
			ActivatesAt time.Time `json:"activates_at"`
		} `json:"next"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("decoding the rotation: %w", err)
	}
	if res.Next.State == "active" {
		fmt.Printf("Key %s (%s) signs from now on; the previous key stays published for key_overlap.\n", res.Next.KID, res.Next.Alg)
	} else {
		fmt.Printf("Key %s (%s) is published and signs from %s.\n", res.Next.KID, res.Next.Alg, when(res.Next.ActivatesAt))
	}
	return caddy.ExitCodeSuccess, nil
}

func cmdZapierRevoke(fl caddycmd.Flags) (int, error) {
	kid := fl.Arg(0)
	body, err := callZapierAdmin(fl, http.MethodPost, "/zapier/keys/revoke?"+url.Values{"kid": {kid}}.Encode())
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	var res struct {
		Revoked string `json:"revoked"`
		Active  struct {
			KID string `json:"kid"`
			Alg string `json:"alg"`
		} `json:"active"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("decoding the revocation: %w", err)
	}
	fmt.Printf("Revoked key %s: it is no longer published and every cached access token was purged.\n", res.Revoked)
	fmt.Printf("Key %s (%s) signs now.\n", res.Active.KID, res.Active.Alg)
	return caddy.ExitCodeSuccess, nil
}

func cmdZapierPurge(fl caddycmd.Flags) (int, error) {
	tenant, user := fl.String("tenant"), fl.String("user")
	var payload any
	switch {
	case tenant != "" && user != "":
		payload = map[string]string{"tenant": tenant, "user": user}
	case tenant != "" || user != "":
		return caddy.ExitCodeFailedStartup, errors.New("give both --tenant and --user, or neither to purge every token")
	}
	body, err := callZapierAdminJSON(fl, http.MethodDelete, "/zapier/tokens", payload)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	var res struct {
		Purged int `json:"purged"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("decoding the purge: %w", err)
	}
	switch {
	case tenant == "":
		fmt.Printf("Purged all access tokens (%d).\n", res.Purged)
	case res.Purged == 0:
		fmt.Println("No access token was cached for that identity.")
	default:
		fmt.Println("Purged the identity's access token.")
	}
	return caddy.ExitCodeSuccess, nil
}

func cmdZapierForget(fl caddycmd.Flags) (int, error) {
	tenant, user := fl.String("tenant"), fl.String("user")
	if tenant == "" {
		return caddy.ExitCodeFailedStartup, errors.New("give --tenant (and --user to offboard only that user)")
	}
	body, err := callZapierAdminJSON(fl, http.MethodPost, "/zapier/forget",
		forgetRequest{Tenant: tenant, User: user, KeepUpstream: fl.Bool("keep-upstream")})
	if err != nil { // a partial failure carries the report: run it again
		return caddy.ExitCodeFailedStartup, err
	}
	var rep forgetReport
	if err := json.Unmarshal(body, &rep); err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("decoding the report: %w", err)
	}
	for _, c := range rep.Connections {
		fmt.Printf("%s %s %s: %s\n", c.User, c.App, c.ConnectionID, c.Upstream)
	}
	for _, st := range rep.Stores {
		fmt.Printf("%s: %d deleted", st.Store, st.Deleted)
		if st.Upstream > 0 {
			fmt.Printf(", %d at Zapier", st.Upstream)
		}
		if st.Failed > 0 {
			fmt.Printf(", %d failed (%s)", st.Failed, st.Error)
		}
		fmt.Println()
	}
	fmt.Printf("Offboarded: %d connections, %d tokens purged, %d pending flows and %d runs forgotten.\n",
		len(rep.Connections), rep.TokensPurged, rep.PendingFlows, rep.Runs)
	return caddy.ExitCodeSuccess, nil
}

// callZapierAdminJSON is callZapierAdmin with payload as the JSON body (none
// when nil): identities travel in the body, never in the logged URI.
func callZapierAdminJSON(fl caddycmd.Flags, method, uri string, payload any) ([]byte, error) {
	var body io.Reader
	headers := http.Header{}
	if payload != nil {
		b, err := json.Marshal(payload)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
		headers.Set("Content-Type", "application/json")
	}
	return callZapierAdminWith(fl, method, uri, headers, body)
}

// callZapierAdmin makes one admin API call and returns the body of a 2xx
// answer; any other answer is an error carrying the admin API's message.
func callZapierAdmin(fl caddycmd.Flags, method, uri string) ([]byte, error) {
	return callZapierAdminWith(fl, method, uri, nil, nil)
}

func callZapierAdminWith(fl caddycmd.Flags, method, uri string, headers http.Header, body io.Reader) ([]byte, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(fl.String("address"), nil, fl.String("config"), fl.String("adapter"))
	if err != nil {
		return nil, fmt.Errorf("finding the admin API address: %w", err)
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, uri, headers, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s at %s: %w", method, strings.SplitN(uri, "?", 2)[0], addr, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the admin API's answer: %w", err)
	}
	return out, nil
}
