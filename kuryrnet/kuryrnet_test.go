package kuryrnet

import (
	"context"
	"reflect"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/tools/cache"
)

func TestPopulateCount(t *testing.T) {
	for _, tc := range []struct{ batch, min, want int }{
		{10, 5, 5}, // kuryr's defaults: 5 per node
		{10, 2, 5}, // half a batch
		{20, 5, 10},
		{5, 2, 2}, // int(2.5): kuryr's int() truncates
		{7, 1, 3},
		{3, 4, 4}, // the pool minimum wins
		{0, 0, 0},
	} {
		if got := PopulateCount(tc.batch, tc.min); got != tc.want {
			t.Errorf("PopulateCount(batch %d, min %d) = %d, want %d", tc.batch, tc.min, got, tc.want)
		}
	}
}

func TestUnstructuredRoundTrip(t *testing.T) {
	k := New("team-a", "proj-1", nil)
	u, err := ToUnstructured(k)
	if err != nil {
		t.Fatal(err)
	}
	// The CRD requires spec.nsLabels: an object, never null.
	labels, found, err := unstructured.NestedMap(u.Object, "spec", "nsLabels")
	if err != nil || !found || labels == nil {
		t.Fatalf("spec.nsLabels = %v (found %v, err %v); want {}", labels, found, err)
	}
	if u.GetAPIVersion() != "openstack.org/v1" || u.GetKind() != "KuryrNetwork" || u.GetNamespace() != "team-a" || u.GetName() != "team-a" {
		t.Fatalf("identity %s %s %s/%s", u.GetAPIVersion(), u.GetKind(), u.GetNamespace(), u.GetName())
	}
	if got := u.GetFinalizers(); !reflect.DeepEqual(got, []string{Finalizer}) {
		t.Fatalf("finalizers %v", got)
	}
	k.Status = Status{NetID: "n", SubnetID: "s", SubnetCIDR: "10.0.0.0/24", RouterID: "r", Populated: true,
		NsLabels: map[string]string{"a": "b"}}
	k.Spec.NsLabels = map[string]string{"a": "b"}
	u, err = ToUnstructured(k)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := unstructured.NestedString(u.Object, "status", "subnetCIDR"); got != "10.0.0.0/24" {
		t.Fatalf("status.subnetCIDR = %q", got)
	}
	back, err := FromUnstructured(u)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Spec, k.Spec) || !reflect.DeepEqual(back.Status, k.Status) || back.Name != k.Name {
		t.Fatalf("round trip:\n got %+v\nwant %+v", back, k)
	}
	if !back.Ready() || !back.Populate() || !back.HasFinalizer() {
		t.Fatalf("Ready %v Populate %v HasFinalizer %v; want all true", back.Ready(), back.Populate(), back.HasFinalizer())
	}
	// DeepCopy shares no map.
	c := back.DeepCopy()
	c.Spec.NsLabels["a"] = "changed"
	c.Status.NsLabels["a"] = "changed"
	if back.Spec.NsLabels["a"] != "b" || back.Status.NsLabels["a"] != "b" {
		t.Fatal("DeepCopy shares label maps with the original")
	}

	other := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "x", "namespace": "y"}}}
	if _, err := FromUnstructured(other); err == nil {
		t.Fatal("FromUnstructured accepted a ConfigMap")
	}
}

func TestPopulate(t *testing.T) {
	now := metav1.Now()
	for _, tc := range []struct {
		name string
		k    KuryrNetwork
		want bool
	}{
		{"ready and populated", KuryrNetwork{Status: Status{NetID: "n", SubnetID: "s", Populated: true}}, true},
		{"populated without subnet", KuryrNetwork{Status: Status{NetID: "n", Populated: true}}, false},
		{"ready, not populated", KuryrNetwork{Status: Status{NetID: "n", SubnetID: "s"}}, false},
		{"being deleted", KuryrNetwork{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now},
			Status: Status{NetID: "n", SubnetID: "s", Populated: true}}, false},
	} {
		if got := tc.k.Populate(); got != tc.want {
			t.Errorf("%s: Populate() = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func fakeDynamic(objs ...runtime.Object) *dynamicfake.FakeDynamicClient {
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{GVR: ListKind}, objs...)
}

func TestClientAndInformer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dyn := fakeDynamic()
	c := NewClient(dyn, "kuryrnet-test")

	inf := NewInformer(dyn, "", 0, nil)
	events := make(chan string, 10)
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			k, ok := FromObject(obj)
			events <- "add " + name(k, ok)
		},
		UpdateFunc: func(_, obj any) {
			k, ok := FromObject(obj)
			events <- "update " + name(k, ok) + " " + k.Status.SubnetID
		},
		DeleteFunc: func(obj any) {
			k, ok := FromObject(obj)
			events <- "delete " + name(k, ok)
		},
	})
	go inf.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("informer did not sync")
	}
	lister := NewLister(inf)

	created, err := c.Create(ctx, New("ns1", "proj", map[string]string{"team": "a"}))
	if err != nil {
		t.Fatal(err)
	}
	expect(t, events, "add ns1")
	got, err := lister.Get("ns1", "ns1")
	if err != nil || got.Spec.NsLabels["team"] != "a" || !got.HasFinalizer() {
		t.Fatalf("lister.Get = %+v, %v", got, err)
	}
	upd := created.DeepCopy()
	upd.Status.SubnetID = "subnet-1"
	if _, err := c.UpdateStatus(ctx, upd); err != nil {
		t.Fatal(err)
	}
	expect(t, events, "update ns1 subnet-1")
	if l, err := c.List(ctx, "ns1"); err != nil || len(l) != 1 || l[0].Status.SubnetID != "subnet-1" {
		t.Fatalf("List = %+v, %v", l, err)
	}
	if err := c.Delete(ctx, "ns1", "ns1", ""); err != nil {
		t.Fatal(err)
	}
	expect(t, events, "delete ns1")
	if _, err := lister.Get("ns1", "ns1"); !apierrors.IsNotFound(err) {
		t.Fatalf("lister.Get after delete: %v; want NotFound", err)
	}
	if _, err := c.Get(ctx, "ns1", "ns1"); !apierrors.IsNotFound(err) {
		t.Fatalf("Get after delete: %v; want NotFound through the wrapping", err)
	}
}

func name(k *KuryrNetwork, ok bool) string {
	if !ok {
		return "<not a *KuryrNetwork>"
	}
	return k.Name
}

func expect(t *testing.T, events <-chan string, want string) {
	t.Helper()
	select {
	case got := <-events:
		if got != want {
			t.Fatalf("event %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no event, want %q", want)
	}
}
