// Command caddy is Caddy with the standard modules and caddy-zapier, built
// from this module's own go.mod. Tests use it when no xcaddy-built binary is
// given; `make -f xcaddy.mk build` produces the same thing the way xcaddy does.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Plug in Caddy modules here.
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/zapgate/caddy-zapier"
)

func main() {
	caddycmd.Main()
}
