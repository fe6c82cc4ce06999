package neutron_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
	"github.com/kuryr-pools/kuryr/pool"
	"github.com/kuryr-pools/kuryr/test/testutil"
)

// envNeutron names the fixture.json of a real neutron-server (hack/neutron-up.sh).
const envNeutron = "KURYR_TEST_NEUTRON"

// target is one Neutron the contract suite runs against.
type target struct {
	name string
	fx   fakeneutron.Fixture
	fake *fakeneutron.Server // nil for the real server
}

func fakeTarget(t *testing.T) target {
	t.Helper()
	s := fakeneutron.New()
	url, err := s.Start()
	if err != nil {
		t.Fatalf("start fakeneutron: %v", err)
	}
	t.Cleanup(s.Close)
	fx, err := s.Fixture("kuryr-test")
	if err != nil {
		t.Fatalf("fakeneutron fixture: %v", err)
	}
	if fx.Endpoint != url {
		t.Fatalf("fixture endpoint %q, server URL %q", fx.Endpoint, url)
	}
	return target{name: "fake", fx: fx, fake: s}
}

func realTarget(t *testing.T) target {
	t.Helper()
	path := os.Getenv(envNeutron)
	testutil.Require(t, path != "", envNeutron+" is not set (run hack/neutron-up.sh and export its output)")
	fx, err := fakeneutron.LoadFixture(path)
	if err != nil {
		t.Fatal(err)
	}
	return target{name: "real", fx: fx}
}

// env is one test's view of a target: a client under test, a second client for setup and
// checks (so that the first one's request counts are the operation's own), and a unique cluster
// name whose tag marks every port the test creates.
type env struct {
	t       *testing.T
	ctx     context.Context
	fx      fakeneutron.Fixture
	fake    *fakeneutron.Server
	c       *neutron.Client // under test
	plain   *neutron.Client // setup, injection, verification
	cluster string
}

func newEnv(t *testing.T, tg target) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, fx: tg.fx, fake: tg.fake, cluster: "ct-" + randHex(4)}
	e.c = e.newClient(neutron.ClientOptions{})
	e.plain = e.newClient(neutron.ClientOptions{QPS: -1}) // setup and cleanup are not the subject

	t.Cleanup(e.deleteTagged)
	return e
}

func (e *env) newClient(o neutron.ClientOptions) *neutron.Client {
	e.t.Helper()
	o.AuthType = neutron.AuthNone
	o.EndpointOverride = e.fx.Endpoint
	o.ProjectID = e.fx.Project
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute // the shared 2-core machine can make a bulk create of 45 take over a minute
	}
	c, err := neutron.NewClient(e.ctx, o, "kuryr-contract-test")
	if err != nil {
		e.t.Fatalf("NewClient: %v", err)
	}
	neutron.SetBackoff(c, func(int) time.Duration { return 10 * time.Millisecond })
	return c
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// clusterTag is the tag of every port this test creates.
func (e *env) clusterTag() string { return neutron.ClusterTag(e.cluster) }

// specs are n port bodies on the pod subnet tagged with the test's cluster and node.
func (e *env) specs(n int, node string, extraTags ...string) []neutron.PortSpec {
	s := make([]neutron.PortSpec, n)
	for i := range s {
		s[i] = neutron.PortSpec{NetworkID: e.fx.PodNetwork, ProjectID: e.fx.Project,
			SubnetIDs: []string{e.fx.PodSubnet}, Name: pool.AvailablePortName, DeviceOwner: pool.DeviceOwnerKuryr,
			Tags: append([]string{e.clusterTag(), neutron.NodeTag(node)}, extraTags...)}
	}
	return s
}

func (e *env) create(specs []neutron.PortSpec) []neutron.Port {
	e.t.Helper()
	ps, err := e.plain.CreatePorts(e.ctx, specs)
	if err != nil {
		e.t.Fatalf("create %d ports: %v", len(specs), err)
	}
	return ps
}

// tagged lists the ports carrying the test's cluster tag (and the extra tags).
func (e *env) tagged(extra ...string) []neutron.Port {
	e.t.Helper()
	ps, err := e.plain.ListPorts(e.ctx, neutron.PortFilter{Tags: append([]string{e.clusterTag()}, extra...)})
	if err != nil {
		e.t.Fatalf("list tagged ports: %v", err)
	}
	return ps
}

// deleteTagged removes every port of the test (detaching subports first).
func (e *env) deleteTagged() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ps, err := e.plain.ListPorts(ctx, neutron.PortFilter{Tags: []string{e.clusterTag()}})
	if err != nil {
		e.t.Errorf("cleanup: list ports: %v", err)
		return
	}
	if failed := e.plain.DeletePorts(ctx, portIDs(ps)); len(failed) > 0 {
		e.t.Errorf("cleanup: ports left behind: %v", failed)
	}
}

// vm is a trunk of the test's own: a parent port on the worker subnet and its trunk, so that
// tests can count subports without seeing each other's. The parent does not carry the cluster
// tag: counts of the test's ports do not include it.
type vm struct {
	parent neutron.Port
	trunk  neutron.Trunk
	ip     string
}

func (e *env) newVM() vm {
	e.t.Helper()
	ps, err := e.plain.CreatePorts(e.ctx, []neutron.PortSpec{{NetworkID: e.fx.WorkerNetwork, ProjectID: e.fx.Project,
		SubnetIDs: []string{e.fx.WorkerSubnet}, Name: "ct-parent-" + e.cluster, DeviceOwner: "compute:nova",
		DeviceID: "ct-vm-" + e.cluster, Tags: []string{"ct-vm-" + e.cluster}}})
	if err != nil {
		e.t.Fatalf("create parent port: %v", err)
	}
	tr, err := e.plain.CreateTrunk(e.ctx, "ct-trunk-"+e.cluster, ps[0].ID, e.fx.Project)
	if err != nil {
		e.plain.DeletePorts(e.ctx, []string{ps[0].ID})
		e.t.Fatalf("create trunk: %v", err)
	}
	// Registered after newEnv's cleanup, so it runs first: detach, drop the trunk, then the
	// parent; deleteTagged then removes the former subports.
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if t, err := e.plain.GetTrunk(ctx, tr.ID); err == nil && len(t.SubPorts) > 0 {
			if err := e.plain.RemoveSubports(ctx, tr.ID, subportIDs(t.SubPorts)); err != nil {
				e.t.Errorf("cleanup: remove subports: %v", err)
			}
		}
		if err := e.plain.DeleteTrunk(ctx, tr.ID); err != nil {
			e.t.Errorf("cleanup: %v", err)
		}
		if err := e.plain.DeletePort(ctx, ps[0].ID); err != nil {
			e.t.Errorf("cleanup: %v", err)
		}
	})
	return vm{parent: ps[0], trunk: tr, ip: ps[0].FixedIPs[0].IPAddress}
}

func (e *env) trunkSubports(id string) map[string]int {
	e.t.Helper()
	tr, err := e.plain.GetTrunk(e.ctx, id)
	if err != nil {
		e.t.Fatalf("get trunk: %v", err)
	}
	m := map[string]int{}
	for _, s := range tr.SubPorts {
		m[s.PortID] = s.SegmentationID
	}
	return m
}

func subportIDs(s []neutron.Subport) []string {
	ids := make([]string, len(s))
	for i, x := range s {
		ids[i] = x.PortID
	}
	return ids
}

func portIDs(ps []neutron.Port) []string {
	ids := make([]string, len(ps))
	for i, p := range ps {
		ids[i] = p.ID
	}
	slices.Sort(ids)
	return ids
}

func poolPortIDs(ps []pool.Port) []string {
	ids := make([]string, len(ps))
	for i, p := range ps {
		ids[i] = p.ID
	}
	slices.Sort(ids)
	return ids
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

func wantErrIs(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want one matching %q", what, err, target)
	}
}

func has(s, sub string) bool { return strings.Contains(s, sub) }
