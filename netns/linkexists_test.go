package netns

import (
	"path/filepath"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/kuryr-pools/kuryr/test/testutil"
)

func TestLinkExists(t *testing.T) {
	testutil.RequireRoot(t)
	pod, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	path := pod.Path()
	defer func() { pod.Close(); _ = testutils.UnmountNS(pod) }()
	if err := pod.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "probe0"}, PeerName: "probe1"}) // no dummy links on every kernel
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		netns, ifname string
		want          bool
	}{
		{path, "probe0", true},
		{path, "eth0", false},
		{filepath.Join(t.TempDir(), "gone"), "probe0", false},
	} {
		got, err := LinkExists(tc.netns, tc.ifname)
		if err != nil || got != tc.want {
			t.Errorf("LinkExists(%s, %s) = %v, %v; want %v", tc.netns, tc.ifname, got, err, tc.want)
		}
	}
}
