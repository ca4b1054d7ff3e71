/* The plugin "codec" each package bundles next to its own libzplug build: it reports the ABI of
 * the libzplug it was linked against (its DT_NEEDED, found through its $ORIGIN RUNPATH). */
int zplug_library_abi(void);

int zplug_plugin_abi(void) { return zplug_library_abi(); }

int zplug_plugin_run(int abi) { return 100 * abi + 7; }
