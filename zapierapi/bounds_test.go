package zapierapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// A listing that ignores limit and never ends is bounded by the number of
// items kept, not only by pages: 2,000 items a page, forever, gives an
// error after the bound instead of 200,000 items in memory.
func TestListingsBoundTheItemsTheyKeep(t *testing.T) {
	page := func(item func(i int) string) string {
		items := make([]string, 2000)
		for i := range items {
			items[i] = item(i)
		}
		return `{"links":{"next":"more"},"data":[` + strings.Join(items, ",") + `]}`
	}
	auths := page(func(i int) string { return fmt.Sprintf(`{"id":%d,"app":"app-uuid","is_expired":false}`, i) })
	actions := page(func(i int) string { return fmt.Sprintf(`{"id":"a%d","key":"k%d","app":"app-uuid"}`, i, i) })
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		if strings.HasPrefix(r.URL.Path, "/v2/authentications") {
			_, _ = w.Write([]byte(auths))
			return
		}
		_, _ = w.Write([]byte(actions))
	})
	c := newTestClient(t, f.URL+"/oauth/token")
	before := f.hits.Load()
	got, err := c.ListAuthentications(context.Background(), f.URL, testAccess, "app-uuid")
	if err == nil || len(got) != 0 {
		t.Fatalf("authentications: %d items, err %v; want an error", len(got), err)
	}
	if pages := f.hits.Load() - before; pages > maxListedItems/2000+1 {
		t.Errorf("read %d pages before giving up", pages)
	}
	acts, err := c.ListActions(context.Background(), f.URL, testAccess, "app-uuid", "")
	if err == nil || len(acts) != 0 {
		t.Fatalf("actions: %d items, err %v; want an error", len(acts), err)
	}
}
