package netns

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TX checksum offload is switched with the SIOCETHTOOL ioctl rather than by running `ethtool -K dev
// tx off`: it saves a fork per pod on the ADD path, and the agent image needs no ethtool binary. The
// legacy ETHTOOL_STXCSUM command is what `ethtool -K tx` maps to in the kernel (all NETIF_F_CSUM_MASK
// features, and TSO with them), and it is still supported.
const (
	ethtoolGTXCSUM = 0x16 // get TX hw csum enable (ethtool_value)
	ethtoolSTXCSUM = 0x17 // set TX hw csum enable (ethtool_value)
)

type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with ifr_data: a real pointer, so the garbage collector keeps the
// ethtoolValue it points to alive and in place during the ioctl.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ethtoolValueIoctl runs one ethtool_value command on a link of the calling thread's netns.
func ethtoolValueIoctl(dev string, v *ethtoolValue) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	var ifr ifreqData
	copy(ifr.name[:unix.IFNAMSIZ-1], dev)
	ifr.data = unsafe.Pointer(v)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return errno
	}
	return nil
}

// setTxChecksum switches TX checksum offload of a link in the calling thread's netns.
func setTxChecksum(dev string, on bool) error {
	v := ethtoolValue{cmd: ethtoolSTXCSUM}
	if on {
		v.data = 1
	}
	if err := ethtoolValueIoctl(dev, &v); err != nil {
		return fmt.Errorf("set TX checksum offload of %s to %v: %w", dev, on, err)
	}
	return nil
}

// txChecksum reports whether TX checksum offload is on for a link in the calling thread's netns.
func txChecksum(dev string) (bool, error) {
	v := ethtoolValue{cmd: ethtoolGTXCSUM}
	if err := ethtoolValueIoctl(dev, &v); err != nil {
		return false, fmt.Errorf("get TX checksum offload of %s: %w", dev, err)
	}
	return v.data != 0, nil
}
