// Command demopartner runs the demo partner app's backend (package
// partner): its login, the identity check of demo/Caddyfile's forward_auth,
// its AI agent (MCP to the gateway) and its receiver of the gateway's
// events. `make -f xcaddy.mk demo` starts it.
package main

import (
	"crypto/rand"
	"flag"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/zapgate/caddy-zapier/demo/partner"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8082", "address to listen on (loopback: only the ingress and the gateway call it)")
	gateway := flag.String("gateway", "http://127.0.0.1:8081", "the gateway, whose /zapier/mcp/ the agent speaks MCP to; empty: no AI agents")
	secretEnv := flag.String("events-secret-env", "ZAPIER_EVENTS_SECRET", "environment variable with zapier_triggers' signing_secret (whsec_…); unset: no events")
	admin := flag.String("admin", "http://localhost:2019", "Caddy's admin API, for the tenant's usage on the page; empty: not shown")
	fake := flag.String("fake-zapier", "", "the fake Zapier with -demo-hooks, for the page's \"fire a trigger\" button; empty: no button")
	flag.Parse()
	// A fresh key each start: restarting the demo logs everyone out, and
	// there is no secret to configure or leak.
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		log.Fatal(err)
	}
	p := partner.New(key)
	if *gateway != "" {
		p.EnableAgents(*gateway)
	}
	if secret := os.Getenv(*secretEnv); secret != "" {
		if err := p.EnableEvents(secret); err != nil {
			log.Fatalf("%s: %v", *secretEnv, err)
		}
	}
	if *admin != "" {
		p.EnableUsage(*admin)
	}
	if *fake != "" {
		p.EnableFakeTrigger(*fake)
	}
	srv := &http.Server{Addr: *listen, Handler: p, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("demo partner backend on http://%s", *listen)
	log.Fatal(srv.ListenAndServe())
}
