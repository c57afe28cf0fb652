package caddymodule

import (
	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/connect"
)

// newConnectionStore is connect's store of connections, telling
// zapier_triggers (triggers_connevents.go) of every account it adds or
// removes.
func newConnectionStore(s certmagic.Storage) *connect.Store {
	st := connect.NewStore(s)
	st.OnAdded = func(tenant, user string, rec connect.Record) {
		connectionChanged(eventConnectionCreated, tenant, user, rec)
	}
	st.OnRemoved = func(tenant, user string, rec connect.Record) {
		connectionChanged(eventConnectionDeleted, tenant, user, rec)
	}
	return st
}
