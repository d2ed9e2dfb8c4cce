include $(sort $(wildcard $(BR2_EXTERNAL_CAMCAST_PATH)/package/*/*.mk))
