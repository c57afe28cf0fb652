// Command fakezapier runs the fake Zapier server (zapier.com/oauth/token,
// api.zapier.com/v2 and connect.zapier.com) for demos and manual testing of
// the gateway. Zapier's documented /v2 rate limits are on unless
// -rate-limits=off; -rate-scale shortens their window and cooldown.
//
//	go run ./integration/cmd/fakezapier -jwks-url http://127.0.0.1:8080/.well-known/jwks.json
package main

import (
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
	var hosts []string
	for h := range strings.SplitSeq(*allowHosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
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

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           srv,
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
