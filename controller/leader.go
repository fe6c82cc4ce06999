package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

// LeaseName is the Lease the controller replicas elect their leader on.
const LeaseName = "kuryr-controller"

// LeaderOptions configure leader election; zero durations take client-go's usual 15s/10s/2s.
type LeaderOptions struct {
	Namespace     string // of the Lease (kube-system)
	Name          string // of the Lease (default LeaseName)
	Identity      string // this replica (pod name and a random suffix)
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	// Healthz, when set, is wired into the election: its Check fails when this replica leads
	// but has not renewed the Lease in time (the /alive probe).
	Healthz *leaderelection.HealthzAdaptor
	// OnLeading, when set, is told when this replica starts or stops leading.
	OnLeading func(bool)
}

// ErrLostLease is returned by RunLeaderElected when this replica stopped leading while its context
// was still live: the process should exit so that nothing it started keeps running.
var ErrLostLease = errors.New("lost the leader Lease")

// RunLeaderElected runs run(ctx) while this replica holds the Lease and returns when ctx is done
// (nil) or the Lease is lost (ErrLostLease). The Lease is released on a clean shutdown, so a
// standby takes over at once.
func RunLeaderElected(ctx context.Context, kube kubernetes.Interface, o LeaderOptions, run func(context.Context)) error {
	if o.Namespace == "" || o.Identity == "" {
		return errors.New("leader election: the Lease namespace and this replica's identity are required")
	}
	if o.Name == "" {
		o.Name = LeaseName
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: o.Identity},
	}
	cfg := leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   durationOr(o.LeaseDuration, 15*time.Second),
		RenewDeadline:   durationOr(o.RenewDeadline, 10*time.Second),
		RetryPeriod:     durationOr(o.RetryPeriod, 2*time.Second),
		ReleaseOnCancel: true,
		Name:            o.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				klog.FromContext(ctx).Info("Leading: starting the controller", "lease", klog.KRef(o.Namespace, o.Name), "identity", o.Identity)
				if o.OnLeading != nil {
					o.OnLeading(true)
				}
				run(ctx)
			},
			OnStoppedLeading: func() {
				if o.OnLeading != nil {
					o.OnLeading(false)
				}
			},
			OnNewLeader: func(id string) {
				if id != o.Identity {
					klog.FromContext(ctx).Info("Standing by", "leader", id)
				}
			},
		},
	}
	if o.Healthz != nil {
		cfg.WatchDog = o.Healthz
	}
	le, err := leaderelection.NewLeaderElector(cfg)
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	le.Run(ctx) // returns when ctx is done or leadership is lost
	if ctx.Err() != nil {
		return nil
	}
	return ErrLostLease
}

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
