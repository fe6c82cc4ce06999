package pool

import (
	"strings"
	"testing"
)

func TestSelectDriver(t *testing.T) {
	mapping := map[string]string{"nested-vlan": "nested", "neutron-vif": "neutron", "nested-macvlan": "noop"}
	for _, tc := range []struct {
		name             string
		mapping          map[string]string
		node, def        string
		wantPool, wantVI string
		wantErr          string
	}{
		{name: "node label wins", mapping: mapping, node: "neutron-vif", def: "nested-vlan", wantPool: "neutron", wantVI: "neutron-vif"},
		{name: "default when the node names none", mapping: mapping, node: "", def: "nested-vlan", wantPool: "nested", wantVI: "nested-vlan"},
		{name: "blank label is none", mapping: mapping, node: "  ", def: "nested-vlan", wantPool: "nested", wantVI: "nested-vlan"},
		{name: "noop mapping", mapping: mapping, node: "nested-macvlan", def: "nested-vlan", wantPool: "noop", wantVI: "nested-macvlan"},
		{name: "single driver config", mapping: map[string]string{"nested-vlan": "nested"}, def: "nested-vlan", wantPool: "nested", wantVI: "nested-vlan"},
		{name: "node driver unmapped", mapping: mapping, node: "nested-dpdk", def: "nested-vlan", wantErr: `node's pod_vif "nested-dpdk"`},
		{name: "default unmapped", mapping: mapping, def: "nested-dpdk", wantErr: `pod_vif_driver "nested-dpdk"`},
		{name: "nothing at all", mapping: mapping, wantErr: "pod_vif_driver is empty"},
		{name: "empty pool driver", mapping: map[string]string{"neutron-vif": ""}, def: "neutron-vif", wantErr: "empty pool driver"},
		{name: "nil mapping", mapping: nil, def: "neutron-vif", wantErr: "not mapped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool, vif, err := SelectDriver(tc.mapping, tc.node, tc.def)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("SelectDriver = %q, %q, %v; want an error with %q", pool, vif, err, tc.wantErr)
				}
				return
			}
			if err != nil || pool != tc.wantPool || vif != tc.wantVI {
				t.Fatalf("SelectDriver = %q, %q, %v; want %q, %q", pool, vif, err, tc.wantPool, tc.wantVI)
			}
		})
	}
}
