package controller

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"

	"github.com/kuryr-pools/kuryr/config"
	"github.com/kuryr-pools/kuryr/kuryrnet"
	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
)

// fixture is a controller over fake Kubernetes clients and fakeneutron (served over HTTP and
// used through the real neutron.Client), with a settable clock.
type fixture struct {
	t    *testing.T
	ctx  context.Context
	kube *k8sfake.Clientset
	dyn  *dynamicfake.FakeDynamicClient
	fn   *fakeneutron.Server
	fx   fakeneutron.Fixture
	nc   *neutron.Client // the controller's
	cfg  *config.Config
	rec  *record.FakeRecorder
	reg  *prometheus.Registry
	pool neutron.SubnetPool

	mu   sync.Mutex
	now  time.Time
	seen []string // events
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancel)
	f := &fixture{t: t, ctx: ctx, fn: fakeneutron.New(), now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		rec: record.NewFakeRecorder(1000), reg: prometheus.NewRegistry()}
	if _, err := f.fn.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.fn.Close)
	var err error
	if f.fx, err = f.fn.Fixture("kuryr-test"); err != nil {
		t.Fatal(err)
	}
	f.nc = f.client()
	if f.pool, err = f.nc.CreateSubnetPool(ctx, "ns-pool", f.fx.Project, []string{"10.100.0.0/16"}, 24); err != nil {
		t.Fatal(err)
	}
	f.cfg = config.Default()
	f.cfg.Kubernetes.ClusterName = fmt.Sprintf("ct-%06x", rand.Uint32()&0xffffff)
	f.cfg.NeutronDefaults.Project = f.fx.Project
	f.cfg.NeutronDefaults.ResourceTags = []string{"kuryr-test"}
	f.kube = k8sfake.NewClientset()
	f.dyn = newFakeDynamic()
	return f
}

func (f *fixture) client() *neutron.Client {
	f.t.Helper()
	c, err := neutron.NewClient(f.ctx, neutron.ClientOptions{AuthType: neutron.AuthNone, EndpointOverride: f.fx.Endpoint,
		ProjectID: f.fx.Project, QPS: -1}, "kuryr-controller-test")
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// namespaced switches the fixture to pod_subnets_driver = namespace with the population handler.
func (f *fixture) namespaced(population bool) {
	f.cfg.Kubernetes.PodSubnetsDriver = "namespace"
	f.cfg.NamespaceSubnet.PodSubnetPool = f.pool.ID
	if population {
		f.cfg.Kubernetes.EnabledHandlers = append(f.cfg.Kubernetes.EnabledHandlers, "namespace", "*kuryrnet*")
	}
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func (f *fixture) options() Options {
	return Options{Config: f.cfg, Kube: f.kube, Dynamic: f.dyn, Neutron: f.nc, Recorder: f.rec, Registerer: f.reg,
		Now: f.clock, GCPeriod: time.Hour, GCGrace: 10 * time.Minute, Resync: time.Hour}
}

func (f *fixture) newController(o Options) *Controller {
	f.t.Helper()
	c, err := New(o)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// run runs the controller until the test ends.
func (f *fixture) run(c *Controller) {
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			f.t.Error(err)
		}
	}()
	f.t.Cleanup(func() { cancel(); <-done })
	f.eventually("controller ready", c.Ready)
}

func (f *fixture) eventually(what string, cond func() bool) {
	f.t.Helper()
	err := wait.PollUntilContextTimeout(f.ctx, 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return cond(), nil
	})
	if err != nil {
		f.t.Fatalf("timed out waiting for %s", what)
	}
}

func (f *fixture) createNamespace(name string, labels map[string]string) *corev1.Namespace {
	f.t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, UID: types.UID(fmt.Sprintf("uid-%s-%08x", name, rand.Uint32()))}}
	ns, err := f.kube.CoreV1().Namespaces().Create(f.ctx, ns, metav1.CreateOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return ns
}

func (f *fixture) kuryrNetwork(ns string) (*kuryrnet.KuryrNetwork, error) {
	return kuryrnet.NewClient(f.dyn, "test").Get(f.ctx, ns, ns)
}

// events returns every event recorded so far.
func (f *fixture) events() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		select {
		case e := <-f.rec.Events:
			f.seen = append(f.seen, e)
		default:
			return slices.Clone(f.seen)
		}
	}
}

// sawEvent waits until an event containing every one of parts was recorded.
func (f *fixture) sawEvent(parts ...string) {
	f.t.Helper()
	f.eventually(fmt.Sprintf("an event with %q", parts), func() bool {
		return slices.ContainsFunc(f.events(), func(e string) bool {
			for _, p := range parts {
				if !strings.Contains(e, p) {
					return false
				}
			}
			return true
		})
	})
}

// newFakeDynamic is a dynamic fake that honours finalizers like the API server: a delete of an
// object with finalizers sets its deletionTimestamp, and the update that removes the last
// finalizer of such an object deletes it.
func newFakeDynamic() *dynamicfake.FakeDynamicClient {
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{kuryrnet.GVR: kuryrnet.ListKind})
	tracker := dyn.Tracker()
	dyn.PrependReactor("delete", kuryrnet.Resource, func(a clienttesting.Action) (bool, runtime.Object, error) {
		d := a.(clienttesting.DeleteAction)
		obj, err := tracker.Get(kuryrnet.GVR, d.GetNamespace(), d.GetName())
		if err != nil {
			return true, nil, err
		}
		u := obj.(*unstructured.Unstructured)
		if len(u.GetFinalizers()) == 0 {
			return false, nil, nil
		}
		if u.GetDeletionTimestamp() == nil {
			now := metav1.Now()
			u.SetDeletionTimestamp(&now)
			return true, nil, tracker.Update(kuryrnet.GVR, u, d.GetNamespace())
		}
		return true, nil, nil
	})
	dyn.PrependReactor("update", kuryrnet.Resource, func(a clienttesting.Action) (bool, runtime.Object, error) {
		u := a.(clienttesting.UpdateAction).GetObject().(*unstructured.Unstructured)
		if a.GetSubresource() == "" && u.GetDeletionTimestamp() != nil && len(u.GetFinalizers()) == 0 {
			return true, u, tracker.Delete(kuryrnet.GVR, u.GetNamespace(), u.GetName())
		}
		return false, nil, nil
	})
	return dyn
}

// counterValue reads a counter or gauge.
func counterValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}
