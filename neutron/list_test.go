package neutron_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kuryr-pools/kuryr/neutron"
)

// listServer answers every port listing with the pages in turn; a page's {{next}} becomes the URL
// of the next page.
func listServer(t *testing.T, pages ...string) (*neutron.Client, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/ports") {
			http.NotFound(w, r)
			return
		}
		i := int(n.Add(1)) - 1
		if i >= len(pages) {
			t.Errorf("request %d beyond the %d pages: %s", i+1, len(pages), r.URL)
			http.Error(w, "no such page", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(strings.ReplaceAll(pages[i], "{{next}}", srv.URL+"/v2.0/ports?marker=x")))
	}))
	t.Cleanup(srv.Close)
	c, err := neutron.NewClient(context.Background(), neutron.ClientOptions{AuthType: neutron.AuthNone,
		EndpointOverride: srv.URL, ProjectID: "p", MaxRetries: -1}, "test")
	if err != nil {
		t.Fatal(err)
	}
	return c, &n
}

func TestListPortsDecoding(t *testing.T) {
	tests := []struct {
		name     string
		pages    []string
		want     []string // port IDs, sorted
		requests int32
		wantErr  string
	}{
		{name: "one page", pages: []string{`{"ports":[{"id":"a","fixed_ips":[{"subnet_id":"s","ip_address":"10.0.0.2"}]},{"id":"b"}]}`},
			want: []string{"a", "b"}, requests: 1},
		{name: "unknown keys and fields ignored",
			pages: []string{`{"extra":{"x":[1,2]},"ports":[{"id":"a","new_attr":{"k":"v"},"binding:vif_details":{"bridge_name":"br-x","port_filter":true}}],"more":null}`},
			want:  []string{"a"}, requests: 1},
		{name: "next links followed",
			pages: []string{`{"ports":[{"id":"a"}],"ports_links":[{"rel":"next","href":"{{next}}"}]}`,
				`{"ports_links":[{"rel":"previous","href":"x"},{"rel":"next","href":"{{next}}"}],"ports":[{"id":"b"}]}`,
				`{"ports":[],"ports_links":[{"rel":"previous","href":"x"}]}`},
			want: []string{"a", "b"}, requests: 3},
		{name: "an empty page linking on ends the listing",
			pages: []string{`{"ports":[{"id":"a"}],"ports_links":[{"rel":"next","href":"{{next}}"}]}`,
				`{"ports":[],"ports_links":[{"rel":"next","href":"{{next}}"}]}`},
			want: []string{"a"}, requests: 2},
		{name: "no ports key", pages: []string{`{}`}, requests: 1},
		{name: "truncated", pages: []string{`{"ports":[{"id":"a"},{"id":`}, requests: 1, wantErr: "decode port listing"},
		{name: "not an object", pages: []string{`[{"id":"a"}]`}, requests: 1, wantErr: "decode port listing"},
		{name: "ports not a list", pages: []string{`{"ports":{"id":"a"}}`}, requests: 1, wantErr: "decode port listing"},
		{name: "a port of the wrong type", pages: []string{`{"ports":[{"id":7}]}`}, requests: 1, wantErr: "decode port listing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, n := listServer(t, tt.pages...)
			got, err := c.ListPorts(context.Background(), neutron.PortFilter{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "list ports") {
					t.Fatalf("error %v, want one naming %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if ids := portIDs(got); !slices.Equal(ids, tt.want) {
				t.Errorf("ports %v, want %v", ids, tt.want)
			}
			if got := n.Load(); got != tt.requests {
				t.Errorf("%d requests, want %d", got, tt.requests)
			}
		})
	}
}

func TestListPortsDecodesVIFDetailsAndFixedIPs(t *testing.T) {
	c, _ := listServer(t, `{"ports":[{"id":"a","binding:vif_type":"ovs","binding:vif_details":{"bridge_name":"br-x","ovs_hybrid_plug":false},
		"fixed_ips":[{"subnet_id":"s","ip_address":"10.0.0.2"}],"tags":["t1","t2"],"security_groups":["sg"]}]}`)
	got, err := c.ListPorts(context.Background(), neutron.PortFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("%d ports, want 1", len(got))
	}
	p := got[0]
	if p.VIFType != "ovs" || p.VIFDetails.BridgeName != "br-x" || len(p.FixedIPs) != 1 || p.FixedIPs[0].IPAddress != "10.0.0.2" ||
		!p.HasTags("t1", "t2") || !slices.Equal(p.SecurityGroups, []string{"sg"}) {
		t.Errorf("decoded %+v", p)
	}
}

func TestListPageSizeOption(t *testing.T) {
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.Query().Get("limit"))
		_, _ = w.Write([]byte(`{"ports":[]}`))
	}))
	t.Cleanup(srv.Close)
	for _, size := range []int{0, 250} {
		c, err := neutron.NewClient(context.Background(), neutron.ClientOptions{AuthType: neutron.AuthNone,
			EndpointOverride: srv.URL, ProjectID: "p", ListPageSize: size}, "test")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.ListPorts(context.Background(), neutron.PortFilter{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ListPorts(context.Background(), neutron.PortFilter{PageSize: 3}); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"", "3", "250", "3"}; !slices.Equal(queries, want) {
		t.Errorf("limit parameters %q, want %q", queries, want)
	}
	if _, err := neutron.NewClient(context.Background(), neutron.ClientOptions{AuthType: neutron.AuthNone,
		EndpointOverride: srv.URL, ProjectID: "p", ListPageSize: -1}, "test"); err == nil || !strings.Contains(err.Error(), "list_page_size") {
		t.Errorf("list_page_size -1: error %v, want one naming the option", err)
	}
}
