package neutron

import (
	"reflect"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/config"
)

// TestOptionsFromConfigCopiesEveryOption fills every [neutron] field with a distinct value and
// checks that each one arrives in the field of the same name: a field added to either struct
// without the mapping fails here.
func TestOptionsFromConfigCopiesEveryOption(t *testing.T) {
	cfg := config.Default()
	src := reflect.ValueOf(&cfg.Neutron).Elem()
	for i := 0; i < src.NumField(); i++ {
		f := src.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("v-" + src.Type().Field(i).Name)
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Int, reflect.Int64:
			if f.Type() == reflect.TypeOf(time.Duration(0)) {
				f.SetInt(int64(time.Duration(i+1) * time.Second))
			} else {
				f.SetInt(int64(i + 100))
			}
		case reflect.Float64:
			f.SetFloat(float64(i) + 0.5)
		default:
			t.Fatalf("[neutron] field %s has kind %s this test does not fill", src.Type().Field(i).Name, f.Kind())
		}
	}
	got := reflect.ValueOf(OptionsFromConfig(cfg))
	for i := 0; i < src.NumField(); i++ {
		name := src.Type().Field(i).Name
		dst := got.FieldByName(name)
		if !dst.IsValid() {
			t.Errorf("ClientOptions has no field %s for [neutron] %s", name, name)
			continue
		}
		if !reflect.DeepEqual(dst.Interface(), src.Field(i).Interface()) {
			t.Errorf("ClientOptions.%s = %v, want %v", name, dst.Interface(), src.Field(i).Interface())
		}
	}
}
