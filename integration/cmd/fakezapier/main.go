// Command fakezapier runs the fake Zapier server (zapier.com/oauth/token,
// api.zapier.com/v2 and, later, connect.zapier.com) for demos and manual
// testing of the gateway.
//
//	go run ./integration/cmd/fakezapier -jwks-url http://127.0.0.1:8080/.well-known/jwks.json
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
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
	if err := fs.Parse(args); err != nil {
		return err
	}

	logger := log.New(os.Stderr, "", log.LstdFlags)
	srv := fakezapier.New(fakezapier.Config{
		ClientID:       *clientID,
		ClientSecret:   *clientSecret,
		Issuer:         *issuer,
		Audience:       *audience,
		UserClaim:      *userClaim,
		TenantClaim:    *tenantClaim,
		JWKSURL:        *jwksURL,
		AccessTokenTTL: *tokenTTL,
		Logf:           logger.Printf,
	})

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
