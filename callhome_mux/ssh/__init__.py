"""callhome_mux.ssh"""
