package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/triggers"
)

// Connection lifecycle events for the partner, sent by every running
// zapier_triggers delivery loop to its deliver_to, signed like trigger
// events.
const (
	eventConnectionCreated = "connection.created" // a connection was stored through zapier_connect
	eventConnectionDeleted = "connection.deleted" // forgotten: DELETE connections/{app}, replaced, or gone at Zapier
)

// connectionChanged tells the running delivery loops that a stored
// connection changed. It never blocks the caller: each loop publishes in
// the background (retries, then a replayable dead letter). Only the gateway
// that made the change sends it, so sidecars sharing storage send it once.
func connectionChanged(typ, tenant, user string, rec connect.Record) {
	body, err := json.Marshal(struct {
		Type         string    `json:"type"`
		Tenant       string    `json:"tenant"`
		User         string    `json:"user"`
		App          string    `json:"app"`
		AppUUID      string    `json:"app_uuid,omitempty"`
		ConnectionID string    `json:"connection_id"`
		Title        string    `json:"title,omitempty"`
		At           time.Time `json:"at"`
	}{typ, tenant, user, rec.App, rec.AppUUID, rec.ConnectionID, rec.Title, time.Now().UTC()})
	if err != nil {
		return
	}
	// The webhook-id names the event, so a retry or replay keeps it.
	sum := sha256.Sum256([]byte(typ + "\x00" + tenant + "\x00" + user + "\x00" + rec.AppUUID + "\x00" + rec.ConnectionID))
	id := "evt_" + hex.EncodeToString(sum[:16])
	who := triggers.Identity{Tenant: tenant, User: user}
	triggersPool.Range(func(_, v any) bool {
		if p, ok := v.(*pooledTriggers); ok && p.mgr != nil {
			p.mgr.Publish(id, who, body)
		}
		return true
	})
}
