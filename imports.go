// Package caddyzapier is the module root. Importing it registers the
// caddy-zapier modules, so `xcaddy build --with github.com/zapgate/caddy-zapier`
// produces a Caddy with the plugin.
package caddyzapier

import (
	// Register the Caddy modules.
	_ "github.com/zapgate/caddy-zapier/caddymodule"
)
