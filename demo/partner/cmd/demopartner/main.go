// Command demopartner runs the demo partner app's backend (package
// partner): its login and the identity check of demo/Caddyfile's
// forward_auth. `make -f xcaddy.mk demo` starts it.
package main

import (
	"crypto/rand"
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/zapgate/caddy-zapier/demo/partner"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8082", "address to listen on (loopback: only the ingress calls it)")
	flag.Parse()
	// A fresh key each start: restarting the demo logs everyone out, and
	// there is no secret to configure or leak.
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: *listen, Handler: partner.New(key), ReadHeaderTimeout: 10 * time.Second}
	log.Printf("demo partner backend on http://%s", *listen)
	log.Fatal(srv.ListenAndServe())
}
