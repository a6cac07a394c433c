"""callhome_mux.netconf"""
