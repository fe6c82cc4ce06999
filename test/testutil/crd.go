package testutil

import (
	"context"
	"os"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"
)

// ApplyCRD creates or updates the CustomResourceDefinition in file (a YAML manifest) and waits
// until the API server serves gvr.
func ApplyCRD(ctx context.Context, t testing.TB, dyn dynamic.Interface, file string, gvr schema.GroupVersionResource) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	crd := &unstructured.Unstructured{Object: obj}
	ri := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	cur, err := ri.Get(ctx, crd.GetName(), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = ri.Create(ctx, crd, metav1.CreateOptions{})
	case err == nil:
		crd.SetResourceVersion(cur.GetResourceVersion())
		_, err = ri.Update(ctx, crd, metav1.UpdateOptions{})
	}
	// Tests of other packages apply the same CRD at the same time.
	if err != nil && !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("apply %s: %v", file, err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		u, err := ri.Get(ctx, crd.GetName(), metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("%s: the CRD did not become Established", file)
	}
	// The API server serves a new CRD a moment after Established.
	_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil, nil
	})
}

// FinalizeNamespace deletes a namespace and does what kube-controller-manager's namespace
// controller would do once it is empty (there is none in the test cluster): it removes the
// kubernetes finalizer, so that the namespace goes.
func FinalizeNamespace(ctx context.Context, kube kubernetes.Interface, name string) {
	ctx = context.WithoutCancel(ctx)
	_ = kube.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	_ = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		ns, err := kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil
		}
		ns.Spec.Finalizers = nil
		_, err = kube.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{})
		return err
	})
}
