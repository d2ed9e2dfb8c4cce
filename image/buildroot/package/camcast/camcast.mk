################################################################################
#
# camcast
#
################################################################################

# Built from this source tree: image/buildroot is two levels below its top.
CAMCAST_VERSION = 0.1.0
CAMCAST_SITE = $(BR2_EXTERNAL_CAMCAST_PATH)/../..
CAMCAST_SITE_METHOD = local
CAMCAST_LICENSE = MIT or Apache-2.0
# cmake: the turbojpeg crate builds libjpeg-turbo; clang: bindgen in the v4l crate.
CAMCAST_DEPENDENCIES = host-cmake host-clang
CAMCAST_CARGO_BUILD_OPTS = --bins
# The tree's .cargo/config.toml names Debian's cross compilers for aarch64; Buildroot's
# own toolchain wins here (the environment beats [env] entries).
CAMCAST_CARGO_ENV = \
	CC_$(subst -,_,$(RUSTC_TARGET_NAME))="$(TARGET_CC)" \
	CXX_$(subst -,_,$(RUSTC_TARGET_NAME))="$(TARGET_CXX)" \
	AR_$(subst -,_,$(RUSTC_TARGET_NAME))="$(TARGET_AR)" \
	BINDGEN_EXTRA_CLANG_ARGS_$(subst -,_,$(RUSTC_TARGET_NAME))="--sysroot=$(STAGING_DIR)" \
	LIBCLANG_PATH="$(HOST_DIR)/lib"

# A local site is rsynced, not downloaded, so Buildroot's download-time vendoring does not
# run: vendor the crates (Cargo.lock pins them) right after the rsync instead.
define CAMCAST_VENDOR_CRATES
	cd $(@D) && $(PKG_COMMON_CARGO_ENV) $(HOST_DIR)/bin/cargo vendor \
		--locked --versioned-dirs VENDOR > $(@D)/.cargo-vendor.toml
	mkdir -p $(@D)/.cargo
	cat $(@D)/.cargo-vendor.toml >> $(@D)/.cargo/config.toml
endef
CAMCAST_POST_RSYNC_HOOKS += CAMCAST_VENDOR_CRATES

CAMCAST_BIN_DIR = $(@D)/target/$(RUSTC_TARGET_NAME)/$(if $(BR2_ENABLE_DEBUG),debug,release)

define CAMCAST_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(CAMCAST_BIN_DIR)/camcast $(TARGET_DIR)/usr/bin/camcast
	$(INSTALL) -D -m 0644 $(@D)/deploy/camcast.toml $(TARGET_DIR)/etc/camcast/camcast.toml
	$(INSTALL) -D -m 0644 $(@D)/deploy/99-camcast.rules \
		$(TARGET_DIR)/etc/udev/rules.d/99-camcast.rules
endef

define CAMCAST_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/deploy/camcast.service \
		$(TARGET_DIR)/usr/lib/systemd/system/camcast.service
endef

# makeusers format: user uid group gid password home shell groups comment
define CAMCAST_USERS
	camcast -1 camcast -1 * - - video,gpio camcast network camera
endef

$(eval $(cargo-package))
