package agent

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/klog/v2/ktesting"

	"github.com/kuryr-pools/kuryr/kuryrnet"
	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/pool"
)

// nsPools records what NamespaceNetworks asks of the pool driver.
type nsPools struct {
	mu          sync.Mutex
	populates   []nsPopulate
	retired     []pool.Key
	failPopOnce bool
	nonEmpty    map[pool.Key]bool
}

type nsPopulate struct {
	key     pool.Key
	subnets []string
	sgs     pool.SGSet
	n       int
}

func (p *nsPools) PopulateEmpty(_ context.Context, key pool.Key, subnetIDs []string, sgs pool.SGSet, n int) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failPopOnce {
		p.failPopOnce = false
		return 0, errors.New("quota exceeded")
	}
	p.populates = append(p.populates, nsPopulate{key, subnetIDs, sgs, n})
	if p.nonEmpty[key] {
		return 0, nil
	}
	return n, nil
}

func (p *nsPools) Retire(_ context.Context, key pool.Key) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.retired = append(p.retired, key)
	return 2, nil
}

func (p *nsPools) snapshot() ([]nsPopulate, []pool.Key) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]nsPopulate(nil), p.populates...), append([]pool.Key(nil), p.retired...)
}

// nsSubnets serves subnets and default security groups.
type nsSubnets struct {
	mu      sync.Mutex
	subnets map[string]neutron.SubnetDetails
	sgCalls int
}

func (s *nsSubnets) SubnetDetails(_ context.Context, id string) (neutron.SubnetDetails, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.subnets[id]
	if !ok {
		return neutron.SubnetDetails{}, errors.New("404 subnet " + id + " not found")
	}
	return sub, nil
}

func (s *nsSubnets) DefaultSecurityGroup(_ context.Context, project string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sgCalls++
	return "default-sg-of-" + project, nil
}

type nsTest struct {
	t     *testing.T
	ctx   context.Context
	kn    *kuryrnet.Client
	pools *nsPools
	subs  *nsSubnets
	n     *NamespaceNetworks
}

func newNSTest(t *testing.T, o NamespaceNetworksOptions) *nsTest {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{kuryrnet.GVR: kuryrnet.ListKind})
	nt := &nsTest{t: t, ctx: ctx, kn: kuryrnet.NewClient(dyn, "test"), pools: &nsPools{nonEmpty: map[pool.Key]bool{}},
		subs: &nsSubnets{subnets: map[string]neutron.SubnetDetails{
			"sub-a": {Subnet: neutron.Subnet{ID: "sub-a", NetworkID: "net-a", CIDR: "10.20.0.0/24", GatewayIP: "10.20.0.1"}, MTU: 1450},
			"sub-b": {Subnet: neutron.Subnet{ID: "sub-b", NetworkID: "net-b", CIDR: "10.21.0.0/24", GatewayIP: "10.21.0.1"}},
		}}}
	o.Node = "node-1"
	if o.Wait == 0 {
		o.Wait = 5 * time.Second
	}
	nt.n = NewNamespaceNetworks(dyn, nt.subs, nt.pools, o)
	done := make(chan struct{})
	go func() {
		defer close(done)
		nt.n.Run(ctx, 2)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return nt
}

// create makes the KuryrNetwork of ns; with netID and subnetID it is ready.
func (nt *nsTest) create(ns, netID, subnetID string, populated bool) *kuryrnet.KuryrNetwork {
	nt.t.Helper()
	k := kuryrnet.New(ns, "proj-"+ns, nil)
	k.Status = kuryrnet.Status{NetID: netID, SubnetID: subnetID, Populated: populated}
	k, err := nt.kn.Create(nt.ctx, k)
	if err != nil {
		nt.t.Fatal(err)
	}
	return k
}

func (nt *nsTest) update(k *kuryrnet.KuryrNetwork) *kuryrnet.KuryrNetwork {
	nt.t.Helper()
	k, err := nt.kn.Update(nt.ctx, k)
	if err != nil {
		nt.t.Fatal(err)
	}
	return k
}

func (nt *nsTest) resolve(ns string) (PodNetwork, error) {
	return nt.n.Resolve(nt.ctx, PodRef{Namespace: ns, Name: "pod"})
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNamespaceNetworksResolveAndPopulate(t *testing.T) {
	nt := newNSTest(t, NamespaceNetworksOptions{PopulateCount: 5, SGs: pool.NewSGSet("sg-1")})

	// A pod created with its namespace waits for the controller to finish the KuryrNetwork.
	type result struct {
		net PodNetwork
		err error
	}
	got := make(chan result, 1)
	go func() {
		n, err := nt.resolve("team-a")
		got <- result{n, err}
	}()
	k := nt.create("team-a", "", "", false)
	select {
	case r := <-got:
		t.Fatalf("Resolve returned before the KuryrNetwork was ready: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
	k.Status = kuryrnet.Status{NetID: "net-a", SubnetID: "sub-a", Populated: true}
	k = nt.update(k)
	r := <-got
	if r.err != nil {
		t.Fatalf("Resolve: %v", r.err)
	}
	want := PodNetwork{Project: "proj-team-a", NetworkID: "net-a", SubnetIDs: []string{"sub-a"}, SGs: pool.NewSGSet("sg-1"),
		Subnet: SubnetInfo{ID: "sub-a", NetworkID: "net-a", CIDR: "10.20.0.0/24", GatewayIP: "10.20.0.1", MTU: 1450}}
	if r.net.Project != want.Project || r.net.NetworkID != want.NetworkID || r.net.SGs != want.SGs || r.net.Subnet.CIDR != want.Subnet.CIDR ||
		len(r.net.SubnetIDs) != 1 || r.net.SubnetIDs[0] != "sub-a" || r.net.Subnet.MTU != 1450 {
		t.Errorf("Resolve = %+v, want %+v", r.net, want)
	}
	key := pool.Key{Node: "node-1", Project: "proj-team-a", Network: "net-a"}
	waitUntil(t, "the pre-population", func() bool { p, _ := nt.pools.snapshot(); return len(p) == 1 })
	pops, _ := nt.pools.snapshot()
	if p := pops[0]; p.key != key || p.n != 5 || p.sgs != want.SGs || len(p.subnets) != 1 || p.subnets[0] != "sub-a" {
		t.Errorf("PopulateEmpty(%+v), want %s with 5 ports on sub-a", p, key)
	}

	// More updates (labels, resyncs) never populate again.
	k.Spec.NsLabels = map[string]string{"team": "a"}
	k = nt.update(k)
	other := nt.create("team-b", "net-b", "sub-b", false) // populated false: no pre-population
	waitUntil(t, "team-b known", func() bool { _, err := nt.resolve("team-b"); return err == nil })
	if pops, _ := nt.pools.snapshot(); len(pops) != 1 {
		t.Errorf("populates %+v, want only the first", pops)
	}

	// Deletion: the pool is retired, pods of the namespace get a clear error at once.
	now := metav1.Now()
	k.DeletionTimestamp = &now
	nt.update(k)
	waitUntil(t, "the pool retired", func() bool { _, r := nt.pools.snapshot(); return len(r) == 1 })
	if _, r := nt.pools.snapshot(); r[0] != key {
		t.Errorf("retired %v, want %s", r, key)
	}
	if _, err := nt.resolve("team-a"); err == nil || !strings.Contains(err.Error(), "team-a is being deleted") {
		t.Errorf("Resolve in a namespace being deleted: %v", err)
	}
	// Gone: forgotten, so that a namespace made again under the name starts afresh.
	if err := nt.kn.Delete(nt.ctx, "team-a", "team-a", ""); err != nil {
		t.Fatal(err)
	}
	nt.create("team-a", "net-b", "sub-b", true)
	waitUntil(t, "the new team-a", func() bool { n, err := nt.resolve("team-a"); return err == nil && n.NetworkID == "net-b" })
	waitUntil(t, "the new team-a pre-populated", func() bool { p, _ := nt.pools.snapshot(); return len(p) == 2 })
	// A KuryrNetwork deleted without the agent seeing its deletionTimestamp retires its pool too.
	if err := nt.kn.Delete(nt.ctx, other.Namespace, other.Name, ""); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "team-b's pool retired", func() bool {
		_, r := nt.pools.snapshot()
		return len(r) == 2 && r[1] == pool.Key{Node: "node-1", Project: "proj-team-b", Network: "net-b"}
	})
}

func TestNamespaceNetworksErrors(t *testing.T) {
	fallback := &PodNetwork{Project: "p", NetworkID: "default-net", SubnetIDs: []string{"default-sub"}}
	tests := []struct {
		name    string
		opts    NamespaceNetworksOptions
		ns      string
		wantNet string
		wantErr string
	}{
		{name: "excluded namespace, default subnet", opts: NamespaceNetworksOptions{Fallback: fallback, Excluded: kuryrnet.ExcludedNamespaces}, ns: "kube-system", wantNet: "default-net"},
		{name: "excluded namespace, no default subnet", opts: NamespaceNetworksOptions{Excluded: kuryrnet.ExcludedNamespaces}, ns: "kube-system", wantErr: `namespace "kube-system" gets no KuryrNetwork`},
		{name: "no KuryrNetwork in time", opts: NamespaceNetworksOptions{Fallback: fallback, Wait: 50 * time.Millisecond}, ns: "team-x", wantErr: "namespace team-x: no ready KuryrNetwork after 50ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nt := newNSTest(t, tc.opts)
			n, err := nt.resolve(tc.ns)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Resolve(%s) = %+v, %v; want an error with %q", tc.ns, n, err, tc.wantErr)
				}
				return
			}
			if err != nil || n.NetworkID != tc.wantNet {
				t.Fatalf("Resolve(%s) = %+v, %v; want network %s", tc.ns, n, err, tc.wantNet)
			}
		})
	}
}

func TestNamespaceNetworksRetriesAndDefaultSGs(t *testing.T) {
	nt := newNSTest(t, NamespaceNetworksOptions{PopulateCount: 3})
	nt.pools.failPopOnce = true
	// A subnet the status names on another network is refused (and retried), not used.
	nt.create("bad", "net-a", "sub-b", true)
	nt.create("team-a", "net-a", "sub-a", true)
	waitUntil(t, "the populate retried after its failure", func() bool { p, _ := nt.pools.snapshot(); return len(p) == 1 })
	n, err := nt.resolve("team-a")
	if err != nil || n.SGs != pool.NewSGSet("default-sg-of-proj-team-a") {
		t.Errorf("Resolve = %+v, %v; want the project's default security group", n, err)
	}
	nt.n.o.Wait = 50 * time.Millisecond
	if _, err := nt.resolve("bad"); !errors.Is(err, errNoNamespaceNetwork) {
		t.Errorf("Resolve of a namespace whose subnet is on another network: %v", err)
	}
}
