// Command fakezapier runs the fake Zapier server (zapier.com/oauth/token,
// api.zapier.com/v2 and connect.zapier.com) for demos and manual testing of
// the gateway. Zapier's documented /v2 rate limits are on unless
// -rate-limits=off; -rate-scale shortens their window and cooldown.
// -mcp-apps and -mcp-redirect-uris set up White Label MCP; -demo-hooks adds
// the demo partner app's way to fire a trigger (POST /_demo/trigger-events).
//
//	go run ./integration/cmd/fakezapier -jwks-url http://127.0.0.1:8080/.well-known/jwks.json
package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		log.Fatalf("fakezapier: %v", err)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("fakezapier", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:9900", "address to listen on")
	clientID := fs.String("client-id", "demo-client", "client_id the token endpoint accepts")
	clientSecret := fs.String("client-secret", "demo-secret", "client_secret the token endpoint accepts")
	issuer := fs.String("issuer", "https://accounts.example.com", "expected iss of partner JWTs")
	jwksURL := fs.String("jwks-url", "http://127.0.0.1:8080/.well-known/jwks.json", "the gateway's JWKS URL")
	tokenTTL := fs.Duration("token-ttl", time.Hour, "lifetime (expires_in) of access tokens")
	audience := fs.String("audience", fakezapier.DefaultAudience, "expected aud of partner JWTs")
	userClaim := fs.String("user-claim", "sub", "JWT claim carrying the user id")
	tenantClaim := fs.String("tenant-claim", "org_id", "JWT claim carrying the tenant id")
	rateLimits := fs.String("rate-limits", "documented", `/v2 rate limits: "documented" (60/min per IP, 150/min per partner, 60 s cooldown) or "off"`)
	rateScale := fs.Float64("rate-scale", 1, "divide the rate-limit window and cooldown by this factor (≥ 1), e.g. 60 for 60 per second per IP with a 1 s cooldown")
	allowHosts := fs.String("callback-allow-hosts", "", "comma-separated callback_url hosts (names or IP literals) exempt from the public-address rule, e.g. 127.0.0.1,localhost")
	insecure := fs.Bool("callback-insecure-skip-verify", false, "do not verify callback receivers' TLS certificates (demos with self-signed gateways only)")
	mcpApps := fs.String("mcp-apps", "", "comma-separated MCP apps, id=Title (e.g. SlackCLIAPI=Slack), listed in /v2/whitelabel/apps with an MCP server each")
	mcpRedirects := fs.String("mcp-redirect-uris", "", "comma-separated MCP redirect URIs the authorize step accepts (exact match)")
	demoHooks := fs.Bool("demo-hooks", false, "serve POST "+fakezapier.DemoHooksPath+` {"tenant","user"}: fire a trigger event in the user's inboxes (demos only)`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var limits *fakezapier.RateLimits
	switch *rateLimits {
	case "documented":
		if !(*rateScale >= 1) {
			return fmt.Errorf("-rate-scale %v: want a number ≥ 1", *rateScale)
		}
		l := fakezapier.DocumentedRateLimits.Scaled(*rateScale)
		limits = &l
	case "off":
	default:
		return fmt.Errorf(`-rate-limits %q: want "documented" or "off"`, *rateLimits)
	}
	hosts := splitList(*allowHosts)
	var callbackClient *http.Client
	if *insecure {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // opt-in, for demos
		callbackClient = &http.Client{Transport: tr}
	}

	logger := log.New(os.Stderr, "", log.LstdFlags)
	srv := fakezapier.New(fakezapier.Config{
		ClientID:           *clientID,
		ClientSecret:       *clientSecret,
		Issuer:             *issuer,
		Audience:           *audience,
		UserClaim:          *userClaim,
		TenantClaim:        *tenantClaim,
		JWKSURL:            *jwksURL,
		AccessTokenTTL:     *tokenTTL,
		Logf:               logger.Printf,
		RateLimits:         limits,
		CallbackAllowHosts: hosts,
		CallbackHTTPClient: callbackClient,
	})
	defer srv.Close() // stops callback deliveries
	for _, a := range splitList(*mcpApps) {
		id, title, _ := strings.Cut(a, "=")
		srv.RegisterMCPApp(id, cmp.Or(title, id))
	}
	if uris := splitList(*mcpRedirects); len(uris) > 0 {
		srv.SetMCPRedirectURIs(uris...)
	}
	var handler http.Handler = srv
	if *demoHooks {
		mux := http.NewServeMux()
		mux.Handle(fakezapier.DemoHooksPath, srv.DemoHooks())
		mux.Handle("/", srv)
		handler = mux
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          logger,
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	fmt.Printf("fake zapier listening on http://%s\n", ln.Addr())
	fmt.Printf("callback JWKS: http://%s/.well-known/jwks.json\n", ln.Addr())
	if limits != nil {
		fmt.Printf("rate limits: %d/IP and %d/partner per %s, cooldown %s\n", limits.PerIP, limits.PerPartner, limits.Window, limits.Cooldown)
	} else {
		fmt.Printf("rate limits: off\n")
	}

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stop()
	logger.Printf("fakezapier: shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		logger.Printf("fakezapier: graceful shutdown: %v; closing connections", err)
		_ = hs.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// splitList splits a comma-separated flag, dropping empty entries.
func splitList(s string) []string {
	var out []string
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
