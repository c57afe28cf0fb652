package connect

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/zapgate/caddy-zapier/gateway"
)

// fakeGateway is an in-memory Gateway.
type fakeGateway struct {
	stored     []Connection
	upstream   map[string]bool // connection id → still at Zapier
	failDelete map[string]int  // connection id → failures left
	calls      []string
}

func (g *fakeGateway) Connections(_ context.Context, tenant, user string) ([]Connection, error) {
	var out []Connection
	for _, c := range g.stored {
		if c.Tenant == tenant && (user == "" || c.User == user) {
			out = append(out, c)
		}
	}
	return out, nil
}

func (g *fakeGateway) DeleteUpstream(_ context.Context, c Connection) (bool, error) {
	g.calls = append(g.calls, "delete "+c.ConnectionID)
	if g.failDelete[c.ConnectionID] > 0 {
		g.failDelete[c.ConnectionID]--
		return false, errors.New("Zapier's API failed (delete authentication): 503")
	}
	gone := !g.upstream[c.ConnectionID]
	delete(g.upstream, c.ConnectionID)
	return gone, nil
}

func (g *fakeGateway) Forget(_ context.Context, c Connection) error {
	g.calls = append(g.calls, "forget "+c.ConnectionID)
	for i, s := range g.stored {
		if s == c {
			g.stored = append(g.stored[:i], g.stored[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("no record %s", c.ConnectionID)
}

func newFakeGateway() *fakeGateway {
	g := &fakeGateway{upstream: map[string]bool{}, failDelete: map[string]int{}}
	for _, c := range []Connection{
		{"t1", "alice", "SlackCLIAPI", slackUUID, "1"},
		{"t1", "alice", "GoogleSheetsV2API", sheetUUID, "2"},
		{"t1", "bob", "SlackCLIAPI", slackUUID, "3"},
		{"t2", "alice", "SlackCLIAPI", slackUUID, "4"},
	} {
		g.stored = append(g.stored, c)
		g.upstream[c.ConnectionID] = true
	}
	return g
}

func offboard(g *fakeGateway, sc gateway.Scope) (gateway.StoreReport, []ConnectionOutcome, error) {
	rep, err := OffboardStore{G: g}.Forget(context.Background(), sc)
	outs, _ := rep.Items.([]ConnectionOutcome)
	return rep, outs, err
}

func TestOffboardAUserIsIdempotentAcrossAFailure(t *testing.T) {
	ctx := context.Background()
	g := newFakeGateway()
	g.failDelete["2"] = 1
	delete(g.upstream, "1") // already deleted at Zapier by the user

	rep, outs, err := offboard(g, gateway.Scope{Tenant: "t1", User: "alice"})
	if err == nil {
		t.Fatal("a partial failure is not an error")
	}
	want := []ConnectionOutcome{ // by user, then app UUID
		{User: "alice", App: "GoogleSheetsV2API", ConnectionID: "2", Error: "Zapier's API failed (delete authentication): 503"},
		{User: "alice", App: "SlackCLIAPI", ConnectionID: "1", Upstream: UpstreamAlreadyGone},
	}
	if rep.Failed != 1 || rep.Deleted != 1 || !reflect.DeepEqual(outs, want) {
		t.Fatalf("first run: %+v", rep)
	}
	// The failed connection's record stays for the retry; nothing else of
	// alice's is left, and others are untouched.
	if got := fmt.Sprint(g.Connections(ctx, "t1", "alice")); got != fmt.Sprint([]Connection{{"t1", "alice", "GoogleSheetsV2API", sheetUUID, "2"}}, nil) {
		t.Errorf("left after the first run: %s", got)
	}
	rep, outs, err = offboard(g, gateway.Scope{Tenant: "t1", User: "alice"})
	if err != nil || len(outs) != 1 || outs[0].Upstream != UpstreamDeleted || rep.Upstream != 1 {
		t.Fatalf("second run: %+v %v", rep, err)
	}
	rep, outs, err = offboard(g, gateway.Scope{Tenant: "t1", User: "alice"})
	if err != nil || len(outs) != 0 || rep.Deleted != 0 {
		t.Errorf("third run: %+v", rep)
	}
	if len(g.stored) != 2 || !g.upstream["3"] || !g.upstream["4"] {
		t.Errorf("others touched: %+v %v", g.stored, g.upstream)
	}
	// Zapier before the record.
	if got := fmt.Sprint(g.calls[:4]); got != "[delete 2 delete 1 forget 1 delete 2]" {
		t.Errorf("order: %s", got)
	}
}

func TestOffboardATenant(t *testing.T) {
	g := newFakeGateway()
	owners, err := Owners(context.Background(), g, gateway.Scope{Tenant: "t1"})
	if want := []Identity{{Tenant: "t1", User: "alice"}, {Tenant: "t1", User: "bob"}}; err != nil || !reflect.DeepEqual(owners, want) {
		t.Errorf("owners = %v, want %v", owners, want)
	}
	rep, outs, err := offboard(g, gateway.Scope{Tenant: "t1", KeepUpstream: true})
	if err != nil || rep.Deleted != 3 || len(outs) != 3 {
		t.Fatalf("%+v %v", rep, err)
	}
	for _, c := range outs {
		if c.Upstream != UpstreamKept {
			t.Errorf("keep_upstream: %+v", c)
		}
	}
	if len(g.stored) != 1 || len(g.upstream) != 4 {
		t.Errorf("left: %+v, upstream %v", g.stored, g.upstream)
	}
}
