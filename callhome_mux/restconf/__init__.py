"""callhome_mux.restconf"""
