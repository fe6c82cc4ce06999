package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"k8s.io/klog/v2"

	"github.com/kuryr-pools/kuryr/internal/crashpoint"
	"github.com/kuryr-pools/kuryr/pool"
)

// recoverer is what start-up reconciliation needs from the pool driver.
type recoverer interface {
	Recover(ctx context.Context, inUse map[string]string, cooling map[string]time.Time) (pool.RecoverReport, error)
	Release(owner string) (pool.Port, error)
}

// recoverState reconciles the checkpoint, the kernel and Neutron at start, before anything is
// served: attachments whose port Neutron no longer has are unplugged and forgotten; attachments
// whose netns is gone (the pod died while the agent was down) give their port back; every other
// attachment keeps its port, so no port is ever handed to two pods.
//
// linkExists tells whether an attachment's interface is still in its netns: one that is gone was
// torn down by kuryr-cni while the agent was away (DEL with the agent down), so its port is free again.
func recoverState(ctx context.Context, d recoverer, ckpt *Checkpoint, plugger Plugger, linkExists func(netnsPath, ifName string) (bool, error)) error {
	log := klog.FromContext(ctx)
	inUse := map[string]string{}
	for _, a := range ckpt.Attachments() {
		inUse[a.Port.ID] = a.Owner()
	}
	cooling := map[string]time.Time{}
	for _, c := range ckpt.CoolingPorts() {
		cooling[c.Port.ID] = c.ReleasedAt
	}
	var report pool.RecoverReport
	var err error
	for attempt := 1; ; attempt++ {
		if report, err = d.Recover(ctx, inUse, cooling); err == nil {
			break
		}
		if attempt == 5 || ctx.Err() != nil {
			return fmt.Errorf("load the pools from Neutron: %w", err)
		}
		log.Error(err, "loading the pools from Neutron failed, retrying", "attempt", attempt)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt) * 2 * time.Second):
		}
	}
	missing := map[string]bool{}
	for _, id := range report.Missing {
		missing[id] = true
	}
	var errs []error
	for _, a := range ckpt.Attachments() {
		gone := !netnsExists(a.Netns)
		if !gone && !missing[a.Port.ID] && linkExists != nil {
			exists, err := linkExists(a.Netns, a.IfName)
			// On an error the attachment is kept: releasing a port a pod still uses is worse
			// than holding one a little longer.
			gone = err == nil && !exists
		}
		switch {
		case missing[a.Port.ID]:
			log.Info("port of an attachment is gone from Neutron; removing the attachment", "containerID", a.ContainerID, "pod", a.Pod.String(), "port", a.Port.ID)
			if err := plugger.Unplug(ctx, a); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := ckpt.Drop(a.ContainerID, a.IfName); err != nil {
				errs = append(errs, err)
			}
		case gone:
			log.Info("netns or interface of an attachment is gone; releasing its port", "containerID", a.ContainerID, "pod", a.Pod.String(), "port", a.Port.ID, "netns", a.Netns)
			if err := plugger.Unplug(ctx, a); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := ckpt.Release(a.ContainerID, a.IfName, time.Now()); err != nil {
				errs = append(errs, err)
				continue
			}
			crashpoint.Hit("recover-released")
			if _, err := d.Release(a.Owner()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	var gone []string
	for _, c := range ckpt.CoolingPorts() {
		if missing[c.Port.ID] {
			gone = append(gone, c.Port.ID)
		}
	}
	if err := ckpt.Cooled(gone...); err != nil {
		errs = append(errs, err)
	}
	log.Info("pools loaded", "report", report)
	return errors.Join(errs...)
}

func netnsExists(path string) bool {
	if path == "" {
		return false
	}
	_, err := os.Stat(path)
	return err == nil
}

// portStates is what pruneCooling needs from the pool driver.
type portStates interface {
	PortState(id string) (pool.State, bool)
}

// pruneCooling forgets checkpointed cooling ports that the pool has taken back (recycled or
// deleted), every period until ctx is done.
func pruneCooling(ctx context.Context, d portStates, ckpt *Checkpoint, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var done []string
		for _, c := range ckpt.CoolingPorts() {
			if st, ok := d.PortState(c.Port.ID); !ok || st != pool.StateCooling {
				done = append(done, c.Port.ID)
			}
		}
		if err := ckpt.Cooled(done...); err != nil {
			klog.FromContext(ctx).Error(err, "prune cooling ports from the checkpoint")
		}
	}
}
